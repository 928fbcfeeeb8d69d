"""The command line, run as a real `python -m echo_server` process, and the lock file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from echo_server.config import load_config
from echo_server.process import cli, lockfile

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI like a user would, without the runner's LARAVEL_ECHO_SERVER_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LARAVEL_ECHO_SERVER_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "echo_server", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for a server that holds the lock."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def write_lock(path: Path, pid: int) -> None:
    path.write_text(json.dumps({"process": pid}, indent="\t"), encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- lock file


def test_lock_path_follows_config_name(tmp_path: Path):
    assert lockfile.lock_path_for(str(tmp_path / "laravel-echo-server.json")) == str(
        tmp_path / "laravel-echo-server.lock"
    )
    assert lockfile.lock_path_for("/etc/echo/custom.json") == "/etc/echo/custom.lock"


def test_acquire_writes_reference_format_and_release_removes(tmp_path: Path):
    lock = tmp_path / "laravel-echo-server.lock"
    lockfile.acquire(str(lock))
    assert lock.read_text() == f'{{\n\t"process": {os.getpid()}\n}}'
    assert lockfile.release(str(lock)) is True
    assert not lock.exists()


def test_acquire_refuses_live_pid(tmp_path: Path, other_process: subprocess.Popen[bytes]):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, other_process.pid)
    with pytest.raises(lockfile.LockError, match="--force"):
        lockfile.acquire(str(lock))
    assert lockfile.read_pid(str(lock)) == other_process.pid
    assert other_process.poll() is None


def test_acquire_force_terminates_owner(tmp_path: Path, other_process: subprocess.Popen[bytes]):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, other_process.pid)
    lockfile.acquire(str(lock), force=True, grace=5)
    assert other_process.wait(timeout=5) == -signal.SIGTERM
    assert lockfile.read_pid(str(lock)) == os.getpid()


def test_acquire_replaces_stale_and_garbage_locks(tmp_path: Path):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, dead_pid())
    lockfile.acquire(str(lock))
    assert lockfile.read_pid(str(lock)) == os.getpid()
    lock.write_text("not json")
    lockfile.acquire(str(lock))
    assert lockfile.read_pid(str(lock)) == os.getpid()


def test_release_leaves_someone_elses_lock(tmp_path: Path, other_process: subprocess.Popen[bytes]):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, other_process.pid)
    assert lockfile.release(str(lock)) is False
    assert lock.exists()


def test_start_refuses_while_locked(tmp_path: Path, other_process: subprocess.Popen[bytes]):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, other_process.pid)
    result = run_cli("start", cwd=tmp_path)
    assert result.returncode == 1
    assert "already a server running" in result.stderr and "--force" in result.stderr
    assert lockfile.read_pid(str(lock)) == other_process.pid
    assert other_process.poll() is None


def test_start_uses_lock_beside_custom_config(
    tmp_path: Path, other_process: subprocess.Popen[bytes]
):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "echo.json").write_text("{}")
    write_lock(tmp_path / "conf" / "echo.lock", other_process.pid)
    result = run_cli("start", "--dir=conf", "--config=echo.json", cwd=tmp_path)
    assert result.returncode == 1 and "--force" in result.stderr


def test_stop_terminates_locked_process(tmp_path: Path, other_process: subprocess.Popen[bytes]):
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, other_process.pid)
    result = run_cli("stop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Closed the running server" in result.stdout
    assert other_process.wait(timeout=5) == -signal.SIGTERM
    assert not lock.exists()


def test_stop_without_lock_or_with_stale_lock(tmp_path: Path):
    result = run_cli("stop", cwd=tmp_path)
    assert result.returncode == 0 and "Could not find any lock file" in result.stdout
    lock = tmp_path / "laravel-echo-server.lock"
    write_lock(lock, dead_pid())
    result = run_cli("stop", cwd=tmp_path)
    assert result.returncode == 0 and "No running servers" in result.stdout
    assert not lock.exists()


# --------------------------------------------------------------------------- start errors


def test_start_with_invalid_json_exits_1(tmp_path: Path):
    (tmp_path / "custom.json").write_text('{"port": 6001,}')
    result = run_cli("start", "--config=custom.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "Error:" in result.stderr and "custom.json" in result.stderr
    assert "not valid JSON" in result.stderr
    assert not (tmp_path / "custom.lock").exists()


# --------------------------------------------------------------------------- init


def test_init_from_flags_writes_a_reference_compatible_file(tmp_path: Path):
    result = run_cli(
        "init",
        "--yes",
        "--port=6101",
        "--auth-host=http://app.test,http://admin.test",
        "--key-prefix=laravel_database_",
        "--redis-host=redis",
        "--no-http-api",
        "--cors",
        "--add-client",
        "--dev",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = read_json(tmp_path / "laravel-echo-server.json")
    assert data["port"] == 6101 and data["devMode"] is True
    assert data["authHost"] == ["http://app.test", "http://admin.test"]
    assert data["databaseConfig"]["redis"] == {"host": "redis", "keyPrefix": "laravel_database_"}
    assert data["subscribers"] == {"http": False, "redis": True}
    assert data["apiOriginAllow"]["allowCors"] is True
    assert data["apiOriginAllow"]["allowMethods"] == "GET, POST"
    [client] = data["clients"]
    assert f"appId: {client['appId']}" in result.stdout and f"key: {client['key']}" in result.stdout
    config = load_config(directory=str(tmp_path), environ={}, cwd=str(tmp_path))
    assert [w for w in config.warnings if "unknown" in w or "shallow" in w] == []
    assert config.key_prefix == "laravel_database_" and not config.subscribers_http


def test_init_refuses_to_overwrite_without_force(tmp_path: Path):
    path = tmp_path / "laravel-echo-server.json"
    path.write_text('{"port": 1234}')
    result = run_cli("init", "--yes", cwd=tmp_path)
    assert result.returncode == 1 and "--force" in result.stderr
    assert read_json(path) == {"port": 1234}
    result = run_cli("init", "--yes", "--force", "--port=6002", cwd=tmp_path)
    assert result.returncode == 0 and read_json(path)["port"] == 6002


def test_init_rejects_a_bad_port(tmp_path: Path):
    result = run_cli("init", "--yes", "--port=none", cwd=tmp_path)
    assert result.returncode == 1 and "port" in result.stderr
    assert not (tmp_path / "laravel-echo-server.json").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_init_asks_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / ".env").write_text("APP_NAME='My Shop'\n")
    answers = [
        "y",  # dev mode
        "7003",  # port
        "https",  # protocol
        "/cert.pem",
        "/key.pem",
        "http://shop.test",  # auth host
        "sqlite",  # database
        "",  # key prefix: accept the suggestion from APP_NAME
        "n",  # API client
        "",  # CORS: default no
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APP_NAME", raising=False)
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    monkeypatch.setattr(sys, "stdin", _Terminal("\n".join(answers) + "\n"))
    assert cli.main(["init"]) == 0
    data = read_json(tmp_path / "laravel-echo-server.json")
    assert data["devMode"] is True and data["port"] == 7003
    assert (data["protocol"], data["sslCertPath"], data["sslKeyPath"]) == (
        "https",
        "/cert.pem",
        "/key.pem",
    )
    assert data["authHost"] == "http://shop.test" and data["database"] == "sqlite"
    assert data["databaseConfig"]["redis"]["keyPrefix"] == "my_shop_database_"
    assert data["clients"] == [] and data["apiOriginAllow"]["allowCors"] is False
    assert "Configuration file saved" in capsys.readouterr().out


# --------------------------------------------------------------------------- clients


def test_client_add_generates_and_renews(tmp_path: Path):
    path = tmp_path / "laravel-echo-server.json"
    path.write_text('{\n    "clients": [],\n    "custom": {"kept": true}\n}\n')
    result = run_cli("client:add", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [client] = read_json(path)["clients"]
    assert len(client["appId"]) == 16 and len(client["key"]) == 32
    assert f"appId: {client['appId']}" in result.stdout
    assert read_json(path)["custom"] == {"kept": True}
    assert '\n    "clients"' in path.read_text(), "the file keeps its indentation"

    result = run_cli("client:add", client["appId"], cwd=tmp_path)
    assert result.returncode == 0 and "updated" in result.stdout
    [renewed] = read_json(path)["clients"]
    assert renewed["appId"] == client["appId"] and renewed["key"] != client["key"]


def test_client_add_does_not_write_env_into_file(tmp_path: Path):
    path = tmp_path / "laravel-echo-server.json"
    path.write_text("{}")
    env = {"LARAVEL_ECHO_SERVER_REDIS_PASSWORD": "secret"}
    result = run_cli("client:add", "app1", cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert set(read_json(path)) == {"clients"}


def test_client_remove(tmp_path: Path):
    path = tmp_path / "conf" / "echo.json"
    path.parent.mkdir()
    clients = [{"appId": "a", "key": "1"}, {"appId": "b", "key": "2"}]
    path.write_text(json.dumps({"clients": clients}))
    args = ("--dir", "conf", "--config", "echo.json")
    result = run_cli("client:remove", "a", *args, cwd=tmp_path)
    assert result.returncode == 0 and "Client removed: a" in result.stdout
    assert read_json(path)["clients"] == [{"appId": "b", "key": "2"}]
    result = run_cli("client:remove", "zzz", *args, cwd=tmp_path)
    assert result.returncode == 1 and "zzz" in result.stderr
    result = run_cli("client:remove", *args, cwd=tmp_path)
    assert result.returncode == 1 and "b" in result.stderr
    assert read_json(path)["clients"] == [{"appId": "b", "key": "2"}]


def test_client_add_needs_a_config_file(tmp_path: Path):
    result = run_cli("client:add", cwd=tmp_path)
    assert result.returncode == 1 and "echo-server init" in result.stderr


# --------------------------------------------------------------------------- install-client


def test_install_client_without_npm_is_a_clear_error(tmp_path: Path):
    result = run_cli(
        "install-client", f"--dest={tmp_path / 'static'}", cwd=tmp_path, env={"PATH": ""}
    )
    assert result.returncode == 1 and "npm is not installed" in result.stderr
    assert not (tmp_path / "static").exists()


# --------------------------------------------------------------------------- with the server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port}")


def start_server(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LARAVEL_ECHO_SERVER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "echo_server", "start", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_start_force_takes_over_and_stop_ends_it(tmp_path: Path):
    port = free_port()
    config = {"database": "sqlite", "subscribers": {"http": True, "redis": False}, "port": port}
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps(config))
    lock = tmp_path / "laravel-echo-server.lock"
    first = start_server(tmp_path)
    second = None
    try:
        wait_until_listening(port, first)
        assert lockfile.read_pid(str(lock)) == first.pid
        second = start_server(tmp_path, "--force")
        assert first.wait(timeout=15) == 0, "the old server shuts down cleanly on SIGTERM"
        wait_until_listening(port, second)
        assert lockfile.read_pid(str(lock)) == second.pid
        result = run_cli("stop", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert second.wait(timeout=15) == 0
        assert not lock.exists()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_prefix_hint_follows_laravel():
    assert cli.laravel_prefix_hint({"APP_NAME": "Lead Admin!"}) == "lead_admin_database_"
    assert cli.laravel_prefix_hint({"APP_NAME": "x", "REDIS_PREFIX": ""}) == ""
    assert cli.laravel_prefix_hint({"REDIS_PREFIX": "p_"}) == "p_"
    assert cli.laravel_prefix_hint({}) == ""
