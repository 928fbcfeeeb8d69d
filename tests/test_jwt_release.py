"""Sockets that close while their handshake token is being verified are let go.

The expiry timer of a token keeps its socket (and its session) until ``exp``, and only a
disconnect cancels it; a socket that closes before it connects never disconnects. So whoever
holds one valid token could open connections and reset them as they authenticate, and the
server would keep every one of them until the token expires. Here the verification waits for a
real JWKS endpoint, so the resets land while it is pending, or as it completes one socket after
another; afterwards no server-side socket of theirs may be left.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from echo_server.transport.engine import EngineServer
from echo_server.transport.sockets import Socket
from tests.support.raw import reset, token_handshake, wait_until
from tests.test_jwt_auth import (
    AUDIENCE,
    ISSUER,
    RSA_KEY,
    JwksServer,
    jwk_of,
    jwks_server,
    rs_token,
)

__all__ = ["jwks_server"]  # the fixture, used by name

CONNECTIONS = 200


def _sockets() -> list[Socket]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is Socket]


@pytest.mark.parametrize("moment", ["while-verifying", "as-verified"])
async def test_sockets_reset_during_authentication_are_not_kept(
        make_server: Any, jwks_server: JwksServer, moment: str) -> None:
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    jwks_server.gate = asyncio.Event()
    jwt = {"jwks_url": jwks_server.url, "algorithms": ["RS256"], "issuer": ISSUER,
           "audience": AUDIENCE}
    server = await make_server({"database": "sqlite", "jwt": jwt}, redis=False)
    already = {id(s) for s in _sockets()}
    token = rs_token(kid="k1")  # valid for ten minutes
    writers = [await token_handshake(server, token) for _ in range(CONNECTIONS)]
    await wait_until(lambda: len(server.part(EngineServer).sessions) == CONNECTIONS
                     and jwks_server.requests == 1, message="every handshake verifying")

    if moment == "while-verifying":
        for writer in writers:
            reset(writer)
        await wait_until(lambda: not server.part(EngineServer).sessions,
                         message="every session closed")
        jwks_server.gate.set()
    else:
        # The sockets waiting for the key get it one after another: reset them all while
        # some have connected and the others are still being let through.
        jwks_server.gate.set()
        while not server.core.connections:
            await asyncio.sleep(0)
        for writer in writers:
            reset(writer)
        await wait_until(lambda: not server.part(EngineServer).sessions,
                         message="every session closed")
    def kept() -> list[Socket]:
        return [s for s in _sockets() if id(s) not in already]

    try:
        await wait_until(lambda: not kept(), timeout=5, message="no socket kept")
    except AssertionError:
        raise AssertionError(f"{len(kept())} of {CONNECTIONS} reset sockets are still held"
                             ) from None
