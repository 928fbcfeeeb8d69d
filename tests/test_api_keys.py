"""API keys and the metrics token: an app without a key opens nothing, and secrets are
compared in constant time, on bytes, so a key from the network can never make it fail."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from echo_server.config import ConfigError, load_config
from tests.conftest import ServerFactory, server_url
from tests.support.http import http_client
from tests.test_cli import run_cli

EVENT = {"channel": "orders", "name": "order.shipped", "data": {"id": 1}}


def _load(directory: Path, clients: list[Any]) -> None:
    (directory / "laravel-echo-server.json").write_text(json.dumps({"clients": clients}))
    load_config(directory=str(directory), environ={}, cwd=str(directory))


@pytest.mark.parametrize("entry", [
    {"appId": "app"}, {"appId": "app", "key": None}, {"appId": "app", "key": ""},
    {"appId": "app", "key": 123}, {"key": "k"}, "app:k",
])
def test_an_entry_without_app_id_and_string_key_is_refused(tmp_path: Path, entry: Any) -> None:
    with pytest.raises(ConfigError, match=r"`clients\[1\]` needs an `appId` and a `key`"):
        _load(tmp_path, [{"appId": "good", "key": "k"}, entry])


def test_start_with_a_keyless_client_exits_1(tmp_path: Path) -> None:
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "port": 0, "clients": [{"appId": "app"}],
        "subscribers": {"http": True, "redis": False}}))
    result = run_cli("start", cwd=tmp_path)
    assert result.returncode == 1
    assert "`clients[0]` needs an `appId` and a `key`" in result.stderr


async def test_an_entry_without_a_key_authorizes_nothing(make_server: ServerFactory) -> None:
    """The literal key ``None`` used to open one (``str(None) == "None"``); the API now
    takes apps, and an ``App`` cannot be built without a key: such an id has no app."""
    server = await make_server(redis=False)
    base = server_url(server) + "/apps/keyless"
    async with http_client() as http:
        for key in ("None", "null", "undefined"):
            async with http.get(f"{base}/status?auth_key={key}") as response:
                assert response.status == 403
            async with http.post(f"{base}/events", json=EVENT,
                                 headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 403


async def test_a_non_ascii_secret_is_a_403(make_server: ServerFactory) -> None:
    server = await make_server({"metrics": {"token": "metrics-token"}}, redis=False)
    base = server_url(server)
    async with http_client() as http:
        for url in (f"{base}/apps/test-app/status?auth_key=%C3%BCber",
                    f"{base}/metrics?token=%C3%BCber"):
            async with http.get(url) as response:
                assert response.status == 403, url
        # Header bytes that are not ASCII (the server reads them as latin-1).
        for path in ("/apps/test-app/status", "/metrics"):
            async with http.get(base + path,
                                headers={"Authorization": "Bearer \u00fcber"}) as response:
                assert response.status == 403, path
        async with http.get(f"{base}/apps/test-app/status?auth_key=test-key") as response:
            assert response.status == 200
        async with http.get(f"{base}/metrics?token=metrics-token") as response:
            assert response.status == 200


async def test_secrets_are_compared_in_constant_time(make_server: ServerFactory,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing cannot be measured reliably here: what is checked is that every key and token
    check goes through ``hmac.compare_digest`` (the real one), on bytes."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    server = await make_server({"metrics": {"token": "metrics-token"}}, redis=False)
    base = server_url(server)
    async with http_client() as http:
        async with http.get(f"{base}/apps/test-app/status?auth_key=test-kez") as response:
            assert response.status == 403
        async with http.get(f"{base}/metrics?token=metrics-tokem") as response:
            assert response.status == 403
    assert compared == [(b"test-kez", b"test-key"), (b"metrics-tokem", b"metrics-token")]
