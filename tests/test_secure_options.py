"""`secureOptions` reaches the TLS context, as the reference's does through Node.

The value is OpenSSL's ``SSL_OP_*`` bitmask; Node's ``constants.SSL_OP_*`` are OpenSSL's
values, and so are Python's ``ssl.OP_*``. Real TLS handshakes against a real server.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from echo_server.config import ConfigError, load_config
from tests.conftest import ServerFactory
from tests.test_server_process import _self_signed

# Node: require('constants').SSL_OP_NO_TLSv1 / SSL_OP_NO_TLSv1_2 (the reference's `init`
# writes the first).
NODE_SSL_OP_NO_TLSv1 = 67108864
NODE_SSL_OP_NO_TLSv1_2 = 134217728


def test_node_and_python_agree_on_the_bits() -> None:
    assert (NODE_SSL_OP_NO_TLSv1, NODE_SSL_OP_NO_TLSv1_2) == (ssl.OP_NO_TLSv1, ssl.OP_NO_TLSv1_2)


async def _handshake(port: int, cert: Path, version: ssl.TLSVersion | None) -> str:
    """The TLS version agreed with a client that offers ``version`` only (None: any)."""
    context = ssl.create_default_context(cafile=str(cert))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), 5)
    try:
        return str(writer.get_extra_info("ssl_object").version())
    finally:
        writer.close()


async def _https_server(make_server: ServerFactory, tmp_path: Path, **options: object) -> int:
    cert, key = _self_signed(tmp_path)
    server = await make_server({"protocol": "https", "sslCertPath": str(cert),
                                "sslKeyPath": str(key), **options}, redis=False)
    return server.port


async def test_secure_options_turn_tls_1_2_off(make_server: ServerFactory,
                                               tmp_path: Path) -> None:
    port = await _https_server(make_server, tmp_path,
                               secureOptions=NODE_SSL_OP_NO_TLSv1 | NODE_SSL_OP_NO_TLSv1_2)
    cert = tmp_path / "cert.pem"
    # Refused with an alert, or the connection dropped before the client read it.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await _handshake(port, cert, ssl.TLSVersion.TLSv1_2)
    assert await _handshake(port, cert, None) == "TLSv1.3"


async def test_reference_default_keeps_tls_1_2(make_server: ServerFactory,
                                               tmp_path: Path) -> None:
    port = await _https_server(make_server, tmp_path)  # secureOptions: SSL_OP_NO_TLSv1
    cert = tmp_path / "cert.pem"
    assert await _handshake(port, cert, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert await _handshake(port, cert, None) == "TLSv1.3"


@pytest.mark.parametrize("value", [-1, "many", 1.5, True, 2**64])
def test_a_bad_value_fails_at_load(tmp_path: Path, value: object) -> None:
    import json

    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({"secureOptions": value}))
    with pytest.raises(ConfigError, match="secureOptions"):
        load_config(directory=str(tmp_path), environ={}, cwd=str(tmp_path))
