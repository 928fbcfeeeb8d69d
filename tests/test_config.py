"""Reading laravel-echo-server.json, `.env` and the environment like the reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from echo_server.config import (
    DEFAULTS,
    Config,
    ConfigError,
    deep_merge,
    ensure_dev_client,
    load_config,
)
from echo_server.process import dotenv


def write_config(directory: Path, data: Any, name: str = "laravel-echo-server.json") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def load(directory: Path, data: Any = None, env: dict[str, str] | None = None, **kw: Any) -> Config:
    """Load from `directory` with a controlled environment (never the test runner's)."""
    if data is not None:
        write_config(directory, data)
    return load_config(directory=str(directory), environ=env or {}, cwd=str(directory), **kw)


def warnings_about(config: Config, word: str) -> list[str]:
    return [warning for warning in config.warnings if word in warning]


# --------------------------------------------------------------------------- files and merging


def test_missing_file_gives_embedded_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="echo_server.config"):
        config = load(tmp_path)
    assert not config.from_file
    assert config.config_file == str(tmp_path / "laravel-echo-server.json")
    assert config.port == 6001
    assert config.host is None
    assert config.auth_hosts == ["http://localhost"]
    assert config.auth_endpoint == "/broadcasting/auth"
    assert config.database == "redis" and config.presence_backend == "redis"
    assert config.subscribers_http and config.subscribers_redis
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.key_prefix == ""
    assert config.apps == []
    assert "embedded defaults" in caplog.text


def test_partial_subscribers_is_merged_deeply_and_warned(tmp_path: Path):
    config = load(tmp_path, {"subscribers": {"http": False}})
    assert config.subscribers_http is False
    assert config.subscribers_redis is True
    [warning] = warnings_about(config, "subscribers")
    assert "redis" in warning and "reference" in warning and "OFF" in warning


def test_complete_subscribers_give_no_merge_warning(tmp_path: Path):
    config = load(tmp_path, {"subscribers": {"http": False, "redis": True}})
    assert warnings_about(config, "shallow") == []
    assert not config.subscribers_http


def test_cors_without_header_values_warns_about_undefined(tmp_path: Path):
    config = load(tmp_path, {"apiOriginAllow": {"allowCors": True, "allowOrigin": "http://a"}})
    [warning] = warnings_about(config, "undefined")
    assert "allowMethods" in warning and "allowHeaders" in warning
    assert "allowOrigin`" not in warning
    assert config.api_origin_allow["allowMethods"] == ""


def test_deep_merge_keeps_sibling_defaults_and_replaces_lists():
    merged = deep_merge(DEFAULTS, {"databaseConfig": {"redis": {"port": 7000}}, "clients": [1]})
    assert merged["databaseConfig"]["sqlite"]["databasePath"].endswith(".sqlite")
    assert merged["databaseConfig"]["redis"] == {"port": 7000}
    assert merged["clients"] == [1]
    assert DEFAULTS["databaseConfig"]["redis"] == {}, "defaults must not be mutated"


def test_unknown_keys_are_kept_and_warned_once(tmp_path: Path):
    config = load(tmp_path, {"eventForwarding": True, "zzz": {"a": 1}, "port": 6001})
    assert config.raw["zzz"] == {"a": 1}
    assert config.raw["eventForwarding"] is True
    [warning] = warnings_about(config, "unknown")
    assert "eventForwarding" in warning and "zzz" in warning and "port" not in warning


def test_invalid_json_is_a_clear_error(tmp_path: Path):
    write_config(tmp_path, '{"port": 6001,\n "host": }')
    with pytest.raises(ConfigError, match=r"not valid JSON.*line 2"):
        load(tmp_path)


def test_json_that_is_not_an_object_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="JSON object"):
        load(tmp_path, [])


def test_wrong_type_names_file_and_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"laravel-echo-server\.json: `subscribers`"):
        load(tmp_path, {"subscribers": True})


def test_config_file_and_dir_resolve_like_the_reference(tmp_path: Path):
    (tmp_path / "conf").mkdir()
    write_config(tmp_path / "conf", {"port": 7100}, name="echo.json")
    config = load_config("echo.json", "conf", environ={}, cwd=str(tmp_path))
    assert config.from_file and config.port == 7100
    assert config.config_file == str(tmp_path / "conf" / "echo.json")


# --------------------------------------------------------------------------- port and devMode


@pytest.mark.parametrize(
    ("value", "port"),
    [(6001, 6001), ("7002", 7002), ("http://example.com:6003", 6003), ("6004/", 6004)],
)
def test_port_uses_trailing_digits(tmp_path: Path, value: Any, port: int):
    assert load(tmp_path, {"port": value}).port == port


@pytest.mark.parametrize("value", ["http://example.com", "6", 99999])
def test_port_without_usable_digits_is_an_error(tmp_path: Path, value: Any):
    with pytest.raises(ConfigError, match="port"):
        load(tmp_path, {"port": value})


@pytest.mark.parametrize(
    ("value", "dev_mode"),
    [(True, True), ("true", True), ("TRUE", False), ("True", False), (1, False), ("false", False)],
)
def test_dev_mode_follows_js_string_comparison(tmp_path: Path, value: Any, dev_mode: bool):
    config = load(tmp_path, {"devMode": value})
    assert config.dev_mode is dev_mode
    assert config.raw["devMode"] is dev_mode


def test_dev_flag_forces_dev_mode(tmp_path: Path):
    assert load(tmp_path, {"devMode": False}, dev=True).dev_mode is True


# --------------------------------------------------------------------------- environment


def test_env_overrides_apply_as_strings(tmp_path: Path):
    env = {
        "LARAVEL_ECHO_SERVER_AUTH_HOST": "https://app.test",
        "LARAVEL_ECHO_SERVER_PORT": "7001",
        "LARAVEL_ECHO_SERVER_HOST": "127.0.0.1",
        "LARAVEL_ECHO_SERVER_DEBUG": "true",
        "LARAVEL_ECHO_SERVER_PROTO": "https",
        "LARAVEL_ECHO_SERVER_SSL_CERT": "/c.pem",
        "LARAVEL_ECHO_SERVER_SSL_KEY": "/k.pem",
        "LARAVEL_ECHO_SERVER_SSL_CHAIN": "/chain.pem",
        "LARAVEL_ECHO_SERVER_SSL_PASS": "secret",
        "LARAVEL_ECHO_SERVER_PORT_UNRELATED": "1",
    }
    config = load(tmp_path, {"port": 6001, "authHost": "http://file"}, env)
    assert config.raw["port"] == "7001" and config.port == 7001
    assert config.auth_hosts == ["https://app.test"]
    assert config.host == "127.0.0.1"
    assert config.dev_mode is True
    assert config.protocol == "https"
    assert (config.ssl_cert_path, config.ssl_key_path) == ("/c.pem", "/k.pem")
    assert (config.ssl_chain_path, config.ssl_passphrase) == ("/chain.pem", "secret")


def test_empty_env_variable_counts_as_unset(tmp_path: Path):
    config = load(tmp_path, {"port": 6100}, {"LARAVEL_ECHO_SERVER_PORT": ""})
    assert config.port == 6100


def test_redis_env_without_database_config_creates_it(tmp_path: Path):
    env = {
        "LARAVEL_ECHO_SERVER_REDIS_HOST": "redis.internal",
        "LARAVEL_ECHO_SERVER_REDIS_PORT": "6380",
        "LARAVEL_ECHO_SERVER_REDIS_PASSWORD": "p@ss/word",
    }
    config = load(tmp_path, {"port": 6001}, env)
    assert config.redis_options == {
        "host": "redis.internal",
        "port": "6380",
        "password": "p@ss/word",
    }
    assert config.redis_url == "redis://:p%40ss%2Fword@redis.internal:6380/0"
    assert len(warnings_about(config, "crash")) == 3


def test_redis_env_with_database_config_is_silent(tmp_path: Path):
    data = {"databaseConfig": {"redis": {"keyPrefix": "laravel_database_"}}}
    config = load(tmp_path, data, {"LARAVEL_ECHO_SERVER_REDIS_HOST": "r"})
    assert config.redis_options == {"keyPrefix": "laravel_database_", "host": "r"}
    assert config.key_prefix == "laravel_database_"
    assert warnings_about(config, "crash") == []


def test_dotenv_in_cwd_with_indirection_and_real_env_winning(tmp_path: Path):
    (tmp_path / ".env").write_text(
        "APP_NAME=Laravel\n"
        "LARAVEL_ECHO_SERVER_REDIS_HOST=${REDIS_HOST}\n"
        "REDIS_HOST=redis-from-dotenv\n"
        "LARAVEL_ECHO_SERVER_PORT=7005\n"
        "LARAVEL_ECHO_SERVER_AUTH_HOST=${APP_URL}\n",
        encoding="utf-8",
    )
    env = {"LARAVEL_ECHO_SERVER_PORT": "7010", "APP_URL": "https://real.test"}
    config = load(tmp_path, {"databaseConfig": {"redis": {}}}, env)
    assert config.redis_options["host"] == "redis-from-dotenv"
    assert config.port == 7010, "a real environment variable beats .env"
    assert config.auth_hosts == ["https://real.test"], "${VAR} sees the real environment"


def test_dotenv_is_read_from_cwd_not_config_dir(tmp_path: Path):
    (tmp_path / "conf").mkdir()
    write_config(tmp_path / "conf", {})
    (tmp_path / "conf" / ".env").write_text("LARAVEL_ECHO_SERVER_PORT=7777\n", encoding="utf-8")
    (tmp_path / ".env").write_text("LARAVEL_ECHO_SERVER_PORT=7888\n", encoding="utf-8")
    config = load_config(directory="conf", environ={}, cwd=str(tmp_path))
    assert config.port == 7888


def test_real_env_value_with_indirection_is_resolved(tmp_path: Path):
    env = {"LARAVEL_ECHO_SERVER_HOST": "${BIND}", "BIND": "0.0.0.0"}
    assert load(tmp_path, {}, env).host == "0.0.0.0"


def test_dotenv_parser_quotes_comments_and_export():
    text = (
        "# comment\n"
        "export A=${B}-x\n"
        'B="two words" # trailing\n'
        "C='${B} literal'\n"
        "D=plain # comment\n"
        'E="multi\nline"\n'
        "F=${F}\n"
        "not a line\n"
        'G="tab\\tquote\\""\n'
    )
    values = dotenv.parse(text, {"D": "real"})
    assert values == {
        "A": "two words-x",
        "B": "two words",
        "C": "${B} literal",
        "E": "multi\nline",
        "F": "",
        "G": 'tab\tquote"',
    }


# --------------------------------------------------------------------------- typed views


def test_auth_host_list_and_host_fallback(tmp_path: Path):
    assert load(tmp_path, {"authHost": ["http://a", "http://b"]}).auth_hosts == [
        "http://a",
        "http://b",
    ]
    assert load(tmp_path, {"authHost": None, "host": "app.local"}).auth_hosts == [
        "http://app.local"
    ]
    assert load(tmp_path, {"authHost": "", "host": None}).auth_hosts == ["http://localhost"]


def test_redis_url_variants(tmp_path: Path):
    redis = {"host": "::1", "port": 6390, "db": 2, "username": "u", "password": "p", "tls": {}}
    config = load(tmp_path, {"databaseConfig": {"redis": redis}})
    assert config.redis_url == "rediss://u:p@[::1]:6390/2"
    config = load(tmp_path, {"databaseConfig": {"redis": {"url": "redis://x:1/3"}}})
    assert config.redis_url == "redis://x:1/3"
    config = load(tmp_path, {"databaseConfig": {"redis": {"path": "/tmp/r.sock"}}})
    assert config.redis_url == "unix:///tmp/r.sock?db=0"


def test_bad_redis_port_is_an_error_only_when_redis_is_used(tmp_path: Path):
    bad = {"databaseConfig": {"redis": {"port": "abc"}}}
    with pytest.raises(ConfigError, match="abc"):
        load(tmp_path, bad)
    unused = {**bad, "database": "sqlite", "subscribers": {"http": True, "redis": False}}
    assert load(tmp_path, unused).presence_backend == "memory"


def test_sqlite_means_memory_presence_with_one_notice(tmp_path: Path):
    config = load(tmp_path, {"database": "sqlite"})
    assert config.presence_backend == "memory"
    assert len(warnings_about(config, "in-memory presence")) == 1


def test_publish_presence_headers_and_cors(tmp_path: Path):
    data = {
        "databaseConfig": {"publishPresence": True},
        "headers": {"X-Frame-Options": "DENY", "X-Num": 5},
        "apiOriginAllow": {
            "allowCors": True,
            "allowOrigin": "*",
            "allowMethods": "GET",
            "allowHeaders": "X",
        },
    }
    config = load(tmp_path, data)
    assert config.publish_presence is True
    assert config.extra_headers == {"X-Frame-Options": "DENY", "X-Num": "5"}
    assert config.api_origin_allow["allowCors"] is True
    assert config.raw["databaseConfig"]["sqlite"]["databasePath"]


def test_socketio_defaults(tmp_path: Path):
    config = load(tmp_path, {})
    assert config.socketio_path == "/socket.io"
    assert (config.ping_interval, config.ping_timeout) == (25.0, 20.0)
    assert config.upgrade_timeout == 10.0
    assert config.max_http_buffer_size == 1_000_000
    assert config.transports == ["polling", "websocket"]
    assert config.write_buffer_high_water == 4 * 1024 * 1024
    assert (config.max_channels_per_socket, config.max_pending_auth_per_socket) == (10_000, 100)
    assert (config.whisper_max_bytes, config.whisper_rate) == (10_000, 10.0)
    assert config.handshake_timeout == 45.0
    assert config.cookie_name == "io" and config.allow_upgrades


def test_socketio_settings_are_read(tmp_path: Path):
    socketio = {
        "path": "/ws/",
        "pingInterval": 10000,
        "pingTimeout": "5000",
        "transports": ["websocket"],
        "maxHttpBufferSize": 2048,
        "writeBufferHighWater": 65536,
        "cookie": False,
        "maxChannelsPerSocket": 50,
        "maxPendingAuthPerSocket": 5,
        "whisperMaxBytes": 2000,
        "whisperRate": 0,
    }
    config = load(tmp_path, {"socketio": socketio})
    assert config.socketio_path == "/ws"
    assert (config.ping_interval, config.ping_timeout) == (10.0, 5.0)
    assert config.transports == ["websocket"]
    assert config.max_http_buffer_size == 2048
    assert config.write_buffer_high_water == 65536
    assert config.cookie_name is None
    assert (config.max_channels_per_socket, config.max_pending_auth_per_socket) == (50, 5)
    assert (config.whisper_max_bytes, config.whisper_rate) == (2000, 0.0)


@pytest.mark.parametrize(
    "socketio",
    [{"pingInterval": "soon"}, {"transports": ["carrier-pigeon"]}, {"maxHttpBufferSize": 0},
     {"maxChannelsPerSocket": 0}, {"whisperRate": -1}, {"whisperRate": "fast"}],
)
def test_bad_socketio_values_fail_at_load(tmp_path: Path, socketio: dict[str, Any]):
    with pytest.raises(ConfigError):
        load(tmp_path, {"socketio": socketio})


def test_pusher_timeouts(tmp_path: Path):
    """Reverb's 30 s keep-alive by default; signing in is timed only with `jwt.required`."""
    defaults = load(tmp_path, {}).pusher_timeouts
    assert (defaults.activity, defaults.pong, defaults.signin) == (30.0, 30.0, 0.0)
    timeouts = load(tmp_path, {
        "pusher": {"activityTimeoutMs": 60000, "pongTimeoutMs": "5000", "signinTimeoutMs": 2000},
        "jwt": {"secret": "x" * 32, "algorithms": ["HS256"], "required": True}}).pusher_timeouts
    assert (timeouts.activity, timeouts.pong, timeouts.signin) == (60.0, 5.0, 2.0)


@pytest.mark.parametrize("pusher", [
    {"pongTimeoutMs": 0}, {"pongTimeoutMs": -1}, {"pongTimeoutMs": "soon"},
    {"pongTimeoutMs": True}, {"activityTimeoutMs": 0}, {"signinTimeoutMs": -5},
])
def test_bad_pusher_timeouts_fail_at_load(tmp_path: Path, pusher: dict[str, Any]):
    key = next(iter(pusher))
    with pytest.raises(ConfigError, match=f"pusher.{key}"):
        load(tmp_path, {"pusher": pusher})


# --------------------------------------------------------------------------- origins


def test_default_origins_allow_everything_with_warning(tmp_path: Path):
    config = load(tmp_path, {})
    assert config.allowed_origins is None
    assert config.origin_allowed("http://evil.example:1234")
    assert len(warnings_about(config, "every origin")) == 1


def test_reference_string_form_is_space_separated(tmp_path: Path):
    config = load(tmp_path, {"socketio": {"origins": "localhost:8000 app.test:*"}})
    assert config.allowed_origins == ["localhost:8000", "app.test:*"]
    assert config.origin_allowed("http://localhost:8000")
    assert config.origin_allowed("https://LOCALHOST:8000")
    assert not config.origin_allowed("http://localhost:800")
    assert not config.origin_allowed("http://localhost")
    assert config.origin_allowed("https://app.test")
    assert config.origin_allowed("http://app.test:9999")
    assert not config.origin_allowed("http://other.test")
    assert warnings_about(config, "every origin") == []


def test_full_origin_urls_and_wildcards(tmp_path: Path):
    origins = ["https://app.example.com", "*:8080", "*.example.org", "http://[::1]:3000"]
    config = load(tmp_path, {"socketio": {"origins": origins}})
    assert config.origin_allowed("https://app.example.com")
    assert config.origin_allowed("https://app.example.com:443/path")
    assert not config.origin_allowed("http://app.example.com"), "scheme is part of an origin"
    assert not config.origin_allowed("https://app.example.com:8443")
    assert config.origin_allowed("http://anything.test:8080")
    assert config.origin_allowed("https://a.b.example.org:4443")
    assert not config.origin_allowed("https://example.org.evil.test")
    assert config.origin_allowed("http://[::1]:3000")
    assert not config.origin_allowed("null")
    assert config.origin_allowed(None), "non-browser clients send no Origin"


def test_star_in_list_means_all(tmp_path: Path):
    assert load(tmp_path, {"socketio": {"origins": ["a:1", "*:*"]}}).allowed_origins is None


def test_bad_origin_entry_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="origins"):
        load(tmp_path, {"socketio": {"origins": "app.test:http"}})


# --------------------------------------------------------------------------- dev client


def test_dev_client_is_generated_once_when_no_clients(tmp_path: Path):
    config = load(tmp_path, {})
    client = ensure_dev_client(config)
    assert client is not None
    assert len(client["appId"]) == 16 and int(client["appId"], 16) >= 0
    assert len(client["key"]) == 32 and int(client["key"], 16) >= 0
    assert [(app.id, app.key) for app in config.apps] == [(client["appId"], client["key"])]
    assert ensure_dev_client(config) is None
    assert json.loads((tmp_path / "laravel-echo-server.json").read_text()) == {}


def test_no_dev_client_when_clients_exist(tmp_path: Path):
    config = load(tmp_path, {"clients": [{"appId": "a", "key": "k"}]})
    assert ensure_dev_client(config) is None
    assert [(app.id, app.key) for app in config.apps] == [("a", "k")]
