"""JWT handshake authentication: real keys, real signatures, a real JWKS server on loopback.

Time-dependent JWKS behaviour (refresh rate limit, cache expiry) runs on an injected clock, so
nothing here sleeps; token expiry uses real ``exp`` values far enough from the boundary.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from channel_auth.jwks import JwksCache
from channel_auth.jwt_auth import (
    AuthenticationError,
    JwtAuthenticator,
    JwtConfigError,
    JwtSettings,
    TokenSources,
    find_token,
)
from tests.support.closing import closing_each

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://id.example.test"
AUDIENCE = "echo"
SECRET = secrets.token_urlsafe(48)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def private_pem(private_key: Any) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "42", "iat": now,
                            "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def rs_token(key: Any = RSA_KEY, kid: str | None = None, alg: str = "RS256",
             **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def none_token(alg: str = "none", signature: str = "", **overrides: Any) -> str:
    """Crafted by hand: PyJWT would not help build an attack."""
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(**overrides))}.{signature}"


def forged_hs256(hmac_key: bytes, kid: str | None = None, **overrides: Any) -> str:
    """HS256 with an arbitrary HMAC key, e.g. the server's RSA public key PEM (the classic
    HS/RS confusion). Hand-made because PyJWT refuses to use a PEM as an HMAC secret."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = f"{b64json(header)}.{b64json(claims(**overrides))}"
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def hs_settings(**overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {"secret": SECRET, "algorithms": ["HS256"], "issuer": ISSUER,
                              "audience": AUDIENCE, "cookie": "echo_token"}
    values.update(overrides)
    return JwtSettings(**values)


def rs_settings(**overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {"public_key": public_pem(RSA_KEY), "algorithms": ["RS256"],
                              "issuer": ISSUER, "audience": AUDIENCE, "cookie": "echo_token"}
    values.update(overrides)
    return JwtSettings(**values)


def jwk_of(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    if alg:
        data["alg"] = alg
    return data


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A real HTTP JWKS endpoint on 127.0.0.1 that counts its requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.status = 200
        self.body: bytes | None = None
        self.url = ""
        self.gate: asyncio.Event | None = None  # when set, answers wait for it
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="nope")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        return web.json_response({"keys": self.keys})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_auth() -> AsyncIterator[Callable[..., JwtAuthenticator]]:
    """Authenticators whose JWKS sessions are closed after the test."""
    async with closing_each() as made:
        def make(settings: JwtSettings, **kwargs: Any) -> JwtAuthenticator:
            auth = JwtAuthenticator(settings, **kwargs)
            made.append(auth)
            return auth

        yield make


def jwks_settings(url: str, **overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {"jwks_url": url, "algorithms": ["RS256"], "issuer": ISSUER,
                              "audience": AUDIENCE, "cookie": "echo_token",
                              "jwks_refresh_interval": 30.0}
    values.update(overrides)
    return JwtSettings(**values)


async def refused(auth: JwtAuthenticator, sources: TokenSources) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        await auth.authenticate(sources)
    return info.value


# --------------------------------------------------------------------------- token sources

SOURCES: dict[str, Callable[[str], TokenSources]] = {
    "auth.token": lambda t: TokenSources(connect_payload={"token": t}),
    # What Echo 2 sends with `bearerToken`: its whole `auth` option is the CONNECT payload.
    "auth.headers": lambda t: TokenSources(connect_payload={
        "headers": {"X-CSRF-TOKEN": "csrf", "Authorization": f"Bearer {t}"}}),
    "query": lambda t: TokenSources(query={"EIO": "3", "transport": "polling", "token": t}),
    "header": lambda t: TokenSources(headers={"authorization": f"Bearer {t}"}),
    "cookie": lambda t: TokenSources(headers={
        "cookie": f"XSRF-TOKEN=abc%3D; echo_token={t}; laravel_session=xyz"}),
}


@pytest.mark.parametrize("source", list(SOURCES))
async def test_valid_token_from_each_source(source: str, make_auth: Any) -> None:
    token = hs_token(sub="from-" + source)
    auth = make_auth(hs_settings())
    assert find_token(SOURCES[source](token), auth.settings) == (token, source)
    result = await auth.authenticate(SOURCES[source](token))
    assert result is not None and result["sub"] == "from-" + source


async def test_first_found_wins_in_documented_order(make_auth: Any) -> None:
    auth = make_auth(hs_settings())
    order = ["auth.token", "auth.headers", "query", "header", "cookie"]
    tokens = {name: hs_token(sub=name) for name in order}
    for start, expected in enumerate(order):
        present = order[start:]
        payload: dict[str, Any] = {}
        if "auth.token" in present:
            payload["token"] = tokens["auth.token"]
        if "auth.headers" in present:
            payload["headers"] = {"authorization": f"bearer {tokens['auth.headers']}"}
        headers = {}
        if "header" in present:
            headers["authorization"] = f"Bearer {tokens['header']}"
        if "cookie" in present:
            headers["cookie"] = f"echo_token={tokens['cookie']}"
        sources = TokenSources(
            connect_payload=payload or None,
            query={"token": tokens["query"]} if "query" in present else {},
            headers=headers)
        result = await auth.authenticate(sources)
        assert result is not None and result["sub"] == expected


async def test_first_found_wins_even_when_it_is_the_bad_one(make_auth: Any) -> None:
    # No falling back to a lower-priority token: the one the client sent first is judged.
    auth = make_auth(hs_settings())
    sources = TokenSources(connect_payload={"token": hs_token(aud="other")},
                           query={"token": hs_token()})
    error = await refused(auth, sources)
    assert (error.reason, error.source) == ("bad_audience", "auth.token")


def test_find_token_edge_cases() -> None:
    settings = hs_settings(query_param="jwt", cookie=None)
    assert find_token(TokenSources(query={"token": "a.b.c"}), settings) is None
    assert find_token(TokenSources(query={"jwt": "a.b.c"}), settings) == ("a.b.c", "query")
    # Without a configured cookie name, cookies are never read.
    assert find_token(TokenSources(headers={"cookie": "echo_token=a.b.c"}), settings) is None
    settings = hs_settings()
    # Other schemes, empty values and non-string tokens are not tokens.
    assert find_token(TokenSources(headers={"authorization": "Basic dXNlcjpwdw=="}),
                      settings) is None
    assert find_token(TokenSources(connect_payload={"token": "", "headers": {}},
                                   query={"token": " "}), settings) is None
    assert find_token(TokenSources(connect_payload={"token": 42}), settings) is None
    assert find_token(TokenSources(connect_payload="a.b.c"), settings) is None
    assert find_token(TokenSources(headers={"cookie": 'x=1; echo_token="a.b.c"'}),
                      settings) == ("a.b.c", "cookie")
    # A broken cookie elsewhere in the header does not hide ours.
    assert find_token(TokenSources(headers={"cookie": 'bad"; =; echo_token=a.b.c'}),
                      settings) == ("a.b.c", "cookie")


# --------------------------------------------------------------------------- the token matrix

def _case_token(case: str, jwks_kid: str) -> str:
    if case == "valid_hs":
        return hs_token()
    if case == "valid_rs":
        return rs_token()
    if case == "valid_jwks":
        return rs_token(kid=jwks_kid)
    if case == "expired":
        return hs_token(exp=int(time.time()) - 120, iat=int(time.time()) - 720)
    if case == "wrong_audience":
        return rs_token(aud="someone-else")
    if case == "wrong_issuer":
        return hs_token(iss="https://evil.example.test")
    if case in {"alg_none_hs", "alg_none_rs"}:
        return none_token()
    if case == "hs_rs_confusion":
        return forged_hs256(public_pem(RSA_KEY).encode())
    if case == "unknown_kid":
        return rs_token(key=RSA_KEY_2, kid="never-published")
    raise AssertionError(case)


CASES = {  # case: (settings kind, expected reason or None for accepted)
    "valid_hs": ("hs", None),
    "valid_rs": ("rs", None),
    "valid_jwks": ("jwks", None),
    "expired": ("hs", "expired"),
    "wrong_audience": ("rs", "bad_audience"),
    "wrong_issuer": ("hs", "bad_issuer"),
    "alg_none_hs": ("hs", "bad_algorithm"),
    "alg_none_rs": ("rs", "bad_algorithm"),
    "hs_rs_confusion": ("rs", "bad_algorithm"),
    "unknown_kid": ("jwks", "unknown_kid"),
}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("case", list(CASES))
async def test_token_matrix(case: str, source: str, jwks_server: JwksServer,
                            make_auth: Any) -> None:
    kind, expected = CASES[case]
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    settings = {"hs": hs_settings, "rs": rs_settings,
                "jwks": lambda: jwks_settings(jwks_server.url)}[kind]()
    auth = make_auth(settings)
    token = _case_token(case, "k1")
    if expected is None:
        result = await auth.authenticate(SOURCES[source](token))
        assert result is not None and result["sub"] == "42" and result["iss"] == ISSUER
    else:
        error = await refused(auth, SOURCES[source](token))
        assert (error.reason, error.source) == (expected, source)
        assert token not in str(error) and token not in repr(error)


# --------------------------------------------------------------------------- time claims

async def test_expiry_within_leeway_passes_and_beyond_it_fails(make_auth: Any) -> None:
    token = hs_token(exp=int(time.time()) - 10)
    assert (await make_auth(hs_settings(leeway=60)).verify(token))["sub"] == "42"
    with pytest.raises(AuthenticationError) as info:
        await make_auth(hs_settings(leeway=2)).verify(token)
    assert info.value.reason == "expired"


async def test_not_before_and_issued_in_the_future(make_auth: Any) -> None:
    auth = make_auth(hs_settings(leeway=5))
    future = int(time.time()) + 300
    for token in (hs_token(nbf=future), hs_token(iat=future)):
        with pytest.raises(AuthenticationError) as info:
            await auth.verify(token)
        assert info.value.reason == "not_yet_valid"
    assert await make_auth(hs_settings(leeway=600)).verify(hs_token(nbf=future))


async def test_exp_is_optional_unless_required(make_auth: Any) -> None:
    token = hs_token(exp=None)
    assert "exp" not in await make_auth(hs_settings()).verify(token)
    with pytest.raises(AuthenticationError) as info:
        await make_auth(hs_settings(require_exp=True)).verify(token)
    assert info.value.reason == "missing_claim"


async def test_missing_or_unexpected_aud_and_iss(make_auth: Any) -> None:
    auth = make_auth(hs_settings())
    for token, reason in ((hs_token(aud=None), "bad_audience"), (hs_token(iss=None), "bad_issuer"),
                          (hs_token(aud=["a", "b"]), "bad_audience")):
        with pytest.raises(AuthenticationError) as info:
            await auth.verify(token)
        assert info.value.reason == reason
    assert await auth.verify(hs_token(aud=["a", AUDIENCE]))
    # RFC 7519 §4.1.3: a token addressed to an audience is refused by a server that has none.
    with pytest.raises(AuthenticationError) as info:
        await make_auth(hs_settings(audience=None)).verify(hs_token())
    assert info.value.reason == "bad_audience"
    assert await make_auth(hs_settings(audience=["x", AUDIENCE])).verify(hs_token())


async def test_expires_in(make_auth: Any) -> None:
    wall = FakeClock()
    wall.now = 1_700_000_000.0
    auth = make_auth(hs_settings(expiry_grace=5), wall_clock=wall)
    assert auth.expires_in({"exp": 1_700_000_060}) == pytest.approx(65.0)
    assert auth.expires_in({"sub": "42"}) is None
    assert auth.expires_in({"exp": 1_699_999_000}) == 0.0
    leeway = make_auth(hs_settings(leeway=30), wall_clock=wall)
    # Accepted within leeway, so not dropped before the leeway is used up either.
    assert leeway.expires_in({"exp": 1_699_999_990}) == pytest.approx(20.0)
    real = make_auth(hs_settings())
    claims_ = await real.verify(hs_token(exp=int(time.time()) + 100))
    remaining = real.expires_in(claims_)
    assert remaining is not None and 95 < remaining <= 100


# --------------------------------------------------------------------------- algorithm attacks

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("kind", ["hs", "rs"])
async def test_alg_none_is_always_refused(alg: str, kind: str, make_auth: Any) -> None:
    auth = make_auth(hs_settings() if kind == "hs" else rs_settings())
    for signature in ("", b64url(b"whatever")):
        with pytest.raises(AuthenticationError) as info:
            await auth.verify(none_token(alg=alg, signature=signature))
        assert info.value.reason == "bad_algorithm"


async def test_hs_rs_confusion_with_both_key_kinds_configured(make_auth: Any) -> None:
    # HS256 is allowed here, but only ever with the secret: the public key is not an HMAC key.
    auth = make_auth(hs_settings(algorithms=["HS256", "RS256"], public_key=public_pem(RSA_KEY)))
    assert await auth.verify(hs_token()) and await auth.verify(rs_token())
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(forged_hs256(public_pem(RSA_KEY).encode()))
    assert info.value.reason == "invalid_signature"


async def test_header_alg_must_fit_the_key(make_auth: Any) -> None:
    # An ES256 token against an RSA key is refused before any signature check.
    auth = make_auth(rs_settings())
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256")
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(token)
    assert info.value.reason == "bad_algorithm"
    # RS256 allowed, PS256 not: a PS256 signature by the right key is still refused.
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(alg="PS256"))
    assert info.value.reason == "bad_algorithm"


async def test_tampered_and_malformed_tokens(make_auth: Any) -> None:
    auth = make_auth(rs_settings())
    good = rs_token()
    header, _payload, signature = good.split(".")
    tampered = f"{header}.{b64json(claims(sub='admin'))}.{signature}"
    other_key = rs_token(key=RSA_KEY_2)
    # Correctly signed, but the payload is not a claims object.
    not_claims = jwt.PyJWS().encode(b"[1,2]", RSA_KEY, algorithm="RS256")
    cases = {tampered: "invalid_signature", other_key: "invalid_signature",
             "not-a-jwt": "malformed", "a.b.c": "malformed",
             not_claims: "malformed",
             "x" * 20000: "malformed"}
    for token, reason in cases.items():
        with pytest.raises(AuthenticationError) as info:
            await auth.verify(token)
        assert info.value.reason == reason, token[:40]


# --------------------------------------------------------------------------- JWKS

async def test_jwks_keys_are_cached(jwks_server: JwksServer, make_auth: Any) -> None:
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256"), jwk_of(EC_KEY, "e1")]
    auth = make_auth(jwks_settings(jwks_server.url, algorithms=["RS256", "ES256"]))
    for _ in range(3):
        assert await auth.verify(rs_token(kid="k1"))
    ec_token = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "e1"})
    assert await auth.verify(ec_token)
    assert jwks_server.requests == 1
    # An RS256 token naming the EC key's kid: the key type decides, not the token.
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(kid="e1"))
    assert info.value.reason == "bad_algorithm"


async def test_jwks_kid_rotation(jwks_server: JwksServer, make_auth: Any) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url), clock=clock)
    assert await auth.verify(rs_token(kid="k1"))
    assert jwks_server.requests == 1
    jwks_server.keys.append(jwk_of(RSA_KEY_2, "k2", "RS256"))
    clock.now += 31  # past the refresh interval: the unknown kid triggers one refresh
    result = await auth.verify(rs_token(key=RSA_KEY_2, kid="k2", sub="rotated"))
    assert result["sub"] == "rotated"
    assert jwks_server.requests == 2
    # The old key is still published, and known without another request.
    assert await auth.verify(rs_token(kid="k1"))
    assert jwks_server.requests == 2


async def test_jwks_refresh_is_rate_limited(jwks_server: JwksServer, make_auth: Any) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url), clock=clock)
    assert await auth.verify(rs_token(kid="k1"))
    clock.now += 31
    # A flood of random kids, concurrently: one refresh, every token refused.
    tokens = [rs_token(key=RSA_KEY_2, kid=secrets.token_hex(8)) for _ in range(40)]
    results = await asyncio.gather(*(auth.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) and r.reason == "unknown_kid" for r in results)
    assert jwks_server.requests == 2
    # Within the interval, a kid the server now has is still unknown to us...
    jwks_server.keys.append(jwk_of(RSA_KEY_2, "k2", "RS256"))
    clock.now += 29
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(key=RSA_KEY_2, kid="k2"))
    assert info.value.reason == "unknown_kid"
    assert jwks_server.requests == 2
    # ...and found once the interval has passed.
    clock.now += 2
    assert await auth.verify(rs_token(key=RSA_KEY_2, kid="k2"))
    assert jwks_server.requests == 3


async def test_jwks_cache_expires(jwks_server: JwksServer, make_auth: Any) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url, jwks_cache_seconds=300), clock=clock)
    assert await auth.verify(rs_token(kid="k1"))
    jwks_server.keys = [jwk_of(RSA_KEY_2, "k2", "RS256")]  # k1 withdrawn
    clock.now += 299
    assert await auth.verify(rs_token(kid="k1"))
    assert jwks_server.requests == 1
    clock.now += 2
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(kid="k1"))
    assert info.value.reason == "unknown_kid"
    assert jwks_server.requests == 2


async def test_jwks_token_must_name_a_kid(jwks_server: JwksServer, make_auth: Any) -> None:
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url))
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token())
    assert info.value.reason == "unknown_kid"
    assert jwks_server.requests == 0


async def test_jwks_key_alg_outside_algorithms_is_never_used(jwks_server: JwksServer,
                                                             make_auth: Any) -> None:
    jwks_server.keys = [jwk_of(RSA_KEY, "k512", "RS512"), jwk_of(RSA_KEY_2, "k256", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url, algorithms=["RS256", "PS256"]))
    # The RS512 key is skipped entirely, even for an allowed algorithm.
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(kid="k512"))
    assert info.value.reason == "unknown_kid"
    # A key published for RS256 does not verify PS256, though both are allowed.
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(key=RSA_KEY_2, kid="k256", alg="PS256"))
    assert info.value.reason == "bad_algorithm"
    assert await auth.verify(rs_token(key=RSA_KEY_2, kid="k256"))


async def test_jwks_symmetric_keys_are_never_trusted(jwks_server: JwksServer,
                                                     make_auth: Any) -> None:
    leaked = secrets.token_bytes(32)
    jwks_server.keys = [{"kty": "oct", "kid": "hmac", "k": b64url(leaked), "alg": "HS256"},
                        jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url, algorithms=["HS256", "RS256"],
                                   secret=SECRET))
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(forged_hs256(leaked, kid="hmac"))
    assert info.value.reason == "invalid_signature"
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(forged_hs256(public_pem(RSA_KEY).encode(), kid="k1"))
    assert info.value.reason == "invalid_signature"


async def test_jwks_keys_of_another_issuer_are_not_trusted(make_auth: Any) -> None:
    server_a, server_b = JwksServer(), JwksServer()
    await server_a.start()
    await server_b.start()
    try:
        # Two providers that happen to use the same kid for different keys.
        server_a.keys = [jwk_of(RSA_KEY, "shared", "RS256")]
        server_b.keys = [jwk_of(RSA_KEY_2, "shared", "RS256")]
        issuer_b = "https://other-id.example.test"
        auth_a = make_auth(jwks_settings(server_a.url))
        auth_b = make_auth(jwks_settings(server_b.url, issuer=issuer_b))
        token_b = rs_token(key=RSA_KEY_2, kid="shared", iss=issuer_b)
        assert (await auth_b.verify(token_b))["iss"] == issuer_b
        assert await auth_a.verify(rs_token(kid="shared"))
        # B's token is refused by A (wrong issuer) before A fetches anything for it...
        requests_a = server_a.requests
        with pytest.raises(AuthenticationError) as info:
            await auth_a.verify(token_b)
        assert info.value.reason == "bad_issuer"
        assert server_a.requests == requests_a
        # ...and B's key cannot vouch for a token claiming A's issuer.
        with pytest.raises(AuthenticationError) as info:
            await auth_a.verify(rs_token(key=RSA_KEY_2, kid="shared"))
        assert info.value.reason == "invalid_signature"
    finally:
        await server_a.stop()
        await server_b.stop()


async def test_jwks_wrong_issuer_with_known_kid(jwks_server: JwksServer, make_auth: Any) -> None:
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url))
    assert await auth.verify(rs_token(kid="k1"))
    # Signed by the right key, but claiming another issuer.
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(kid="k1", iss="https://evil.example.test"))
    assert info.value.reason == "bad_issuer"
    with pytest.raises(AuthenticationError) as info:
        await auth.verify(rs_token(kid="k1", iss=None))
    assert info.value.reason == "bad_issuer"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_jwks_server_down(make_auth: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}/.well-known/jwks.json"
    auth = make_auth(jwks_settings(url, jwks_timeout=2))
    error = await refused(auth, TokenSources(connect_payload={"token": rs_token(kid="k1")}))
    assert (error.reason, error.source) == ("jwks_unavailable", "auth.token")


@pytest.mark.parametrize("failure", ["http_500", "not_json", "no_keys", "redirect"])
async def test_jwks_bad_answers_are_unavailable_and_rate_limited(
        failure: str, jwks_server: JwksServer, make_auth: Any) -> None:
    if failure == "http_500":
        jwks_server.status = 500
    elif failure == "redirect":
        jwks_server.status = 302
    elif failure == "not_json":
        jwks_server.body = b"<html>"
    else:
        jwks_server.body = json.dumps({"keys": [{"kty": "RSA", "kid": "broken"}]}).encode()
    clock = FakeClock()
    auth = make_auth(jwks_settings(jwks_server.url), clock=clock)
    for _ in range(3):
        with pytest.raises(AuthenticationError) as info:
            await auth.verify(rs_token(kid="k1"))
        assert info.value.reason == "jwks_unavailable"
    assert jwks_server.requests == 1
    jwks_server.status, jwks_server.body = 200, None
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    clock.now += 31
    assert await auth.verify(rs_token(kid="k1"))
    assert jwks_server.requests == 2


async def test_jwks_outage_keeps_known_keys(jwks_server: JwksServer, make_auth: Any) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    auth = make_auth(jwks_settings(jwks_server.url), clock=clock)
    assert await auth.verify(rs_token(kid="k1"))
    jwks_server.status = 503
    clock.now += 1000  # cache expired, refresh fails
    assert await auth.verify(rs_token(kid="k1"))
    assert jwks_server.requests == 2


def test_jwks_cache_is_keyed_by_issuer_and_kid() -> None:
    cache = JwksCache("https://id.example.test/jwks", ISSUER, ["RS256"])
    keys = cache.parse({"keys": [jwk_of(RSA_KEY, "k1", "RS256"), jwk_of(RSA_KEY_2, "k1"),
                                 {"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "AQAB"},
                                 jwk_of(EC_KEY, "ec")]})
    assert list(keys) == [(ISSUER, "k1")]  # duplicate kid: first kept; enc and EC skipped


# --------------------------------------------------------------------------- required / anonymous

async def test_required_false_allows_anonymous_but_refuses_bad_tokens(make_auth: Any) -> None:
    auth = make_auth(hs_settings(required=False))
    assert await auth.authenticate(TokenSources()) is None
    assert await auth.authenticate(TokenSources(connect_payload={}, query={"EIO": "4"})) is None
    result = await auth.authenticate(SOURCES["query"](hs_token()))
    assert result is not None and result["sub"] == "42"
    for token, reason in ((hs_token(exp=int(time.time()) - 60), "expired"),
                          (none_token(), "bad_algorithm"), ("garbage", "malformed")):
        error = await refused(auth, SOURCES["cookie"](token))
        assert (error.reason, error.source) == (reason, "cookie")


async def test_required_true_refuses_anonymous(make_auth: Any) -> None:
    error = await refused(make_auth(hs_settings()), TokenSources(query={"EIO": "4"}))
    assert (error.reason, error.source) == ("missing", None)
    assert str(error) == "authentication required"


async def test_tokens_never_reach_logs_or_messages(jwks_server: JwksServer, make_auth: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    jwks_server.status = 500
    auth = make_auth(jwks_settings(jwks_server.url + "?api_key=hush", secret=SECRET,
                                   algorithms=["HS256", "RS256"]))
    tokens = [rs_token(kid="k1"), hs_token(aud="x"), none_token(), forged_hs256(b"k" * 32)]
    for token in tokens:
        error = await refused(auth, SOURCES["header"](token))
        assert token not in str(error) and token.split(".")[1] not in repr(error.args)
    ours = "\n".join(r.getMessage() for r in caplog.records
                      if r.name.startswith("channel_auth"))
    assert "HTTP 500" in ours  # the outage is logged...
    for token in tokens:
        assert token.split(".")[1] not in caplog.text  # ...the tokens are not
    assert "hush" not in ours and SECRET not in caplog.text


# --------------------------------------------------------------------------- configuration

def test_not_configured_is_none() -> None:
    assert JwtSettings.from_config(None, {}) is None
    assert JwtSettings.from_config(False, {"PATH": "/bin"}) is None  # type: ignore[arg-type]
    assert JwtSettings.from_config(None, {"ECHO_JWT_SECRET": ""}) is None


def test_env_alone_configures_and_env_wins_over_file(tmp_path: Path) -> None:
    settings = JwtSettings.from_config(None, {"ECHO_JWT_SECRET": SECRET,
                                              "ECHO_JWT_ALGORITHMS": "HS256"})
    assert settings is not None and settings.algorithms == ["HS256"] and settings.required
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(public_pem(RSA_KEY))
    section = {"secret": "file-secret-that-is-long-enough-for-hs256!!", "algorithms": ["HS256"],
               "issuer": "file-issuer", "audience": "file-aud", "leeway": 1, "required": True,
               "cookie": "file_cookie", "expiry_grace": 2}
    env = {"ECHO_JWT_SECRET": SECRET, "ECHO_JWT_ALGORITHMS": "HS256, RS256",
           "ECHO_JWT_PUBLIC_KEY_PATH": str(key_file), "ECHO_JWT_ISSUER": ISSUER,
           "ECHO_JWT_AUDIENCE": "echo,admin", "ECHO_JWT_LEEWAY": "7.5",
           "ECHO_JWT_REQUIRED": "false", "ECHO_JWT_COOKIE": "echo_token",
           "ECHO_JWT_EXPIRY_GRACE": "30", "ECHO_JWT_REQUIRE_EXP": "yes",
           "OTHER": "ignored"}
    settings = JwtSettings.from_config(section, env)
    assert settings is not None
    assert settings.secret == SECRET and settings.algorithms == ["HS256", "RS256"]
    assert settings.public_key == public_pem(RSA_KEY)
    assert (settings.issuer, settings.audience, settings.leeway) == (ISSUER, ["echo", "admin"], 7.5)
    assert (settings.required, settings.cookie, settings.expiry_grace) == (False, "echo_token", 30)
    assert settings.require_exp is True
    assert SECRET not in repr(settings)
    file_only = JwtSettings.from_config(section, {})
    assert file_only is not None and file_only.audience == "file-aud" and file_only.leeway == 1


def test_public_key_from_env_with_escaped_newlines() -> None:
    escaped = public_pem(EC_KEY).replace("\n", "\\n")
    settings = JwtSettings.from_config({"algorithms": ["ES256"]},
                                       {"ECHO_JWT_PUBLIC_KEY": escaped})
    assert settings is not None and settings.public_key.strip() == public_pem(EC_KEY).strip()


async def test_from_config_result_authenticates(make_auth: Any) -> None:
    settings = JwtSettings.from_config(
        {"algorithms": "RS256", "public_key": public_pem(RSA_KEY), "issuer": ISSUER,
         "audience": AUDIENCE, "query_param": "jwt"}, {})
    assert settings is not None
    auth = make_auth(settings)
    assert await auth.authenticate(TokenSources(query={"jwt": rs_token()}))


CONFIG_ERRORS: list[tuple[dict[str, Any], dict[str, str], str]] = [
    ({}, {}, "jwt.algorithms is required"),
    ({"secret": SECRET}, {}, "jwt.algorithms is required"),
    ({"algorithms": ["HS256"]}, {}, "needs jwt.secret"),
    ({"algorithms": ["RS256"]}, {}, "needs jwt.public_key"),
    ({"algorithms": ["RS256"], "secret": SECRET}, {}, "has no HS256"),
    ({"algorithms": ["HS256", "RS256"], "secret": SECRET}, {}, "RS256, which needs"),
    ({"algorithms": ["HS256"], "public_key": public_pem(RSA_KEY), "secret": SECRET}, {},
     "has no RS*"),
    ({"algorithms": ["HS256", "RS256"], "secret": public_pem(RSA_KEY),
      "public_key": public_pem(RSA_KEY)}, {}, "HS/RS confusion"),
    ({"algorithms": ["HS256"], "secret": public_pem(RSA_KEY)}, {}, "HS/RS confusion"),
    ({"algorithms": ["none"]}, {}, "'none' is not allowed"),
    ({"algorithms": ["HS256", "NONE"], "secret": SECRET}, {}, "is not allowed"),
    ({"algorithms": ["rs256"], "public_key": public_pem(RSA_KEY)}, {}, "unknown algorithm"),
    ({"algorithms": ["HS512"], "secret": "x" * 40}, {}, "64 bytes"),
    ({"algorithms": ["ES256"], "public_key": public_pem(RSA_KEY)}, {}, "cannot verify ES256"),
    ({"algorithms": ["ES384"], "public_key": public_pem(EC_KEY)}, {}, "cannot verify ES384"),
    ({"algorithms": ["RS256"], "public_key": private_pem(RSA_KEY)}, {}, "private key"),
    ({"algorithms": ["RS256"], "public_key": "hello"}, {}, "not a readable PEM"),
    ({"algorithms": ["RS256"], "public_key": public_pem(RSA_KEY),
      "public_key_path": "/x.pem"}, {}, "exclusive"),
    ({"algorithms": ["RS256"], "public_key": public_pem(RSA_KEY),
      "jwks_url": "https://id.example.test/jwks", "issuer": ISSUER}, {}, "exclusive"),
    ({"algorithms": ["RS256"], "jwks_url": "https://id.example.test/jwks"}, {},
     "needs jwt.issuer"),
    ({"algorithms": ["RS256"], "jwks_url": "file:///etc/keys", "issuer": ISSUER}, {},
     "http(s) URL"),
    ({"algorithms": ["RS256"], "public_key_path": "/nonexistent/jwt.pem"}, {}, "cannot read"),
    ({"algorithms": ["HS256"], "secret": SECRET, "leeway": "soon"}, {}, "jwt.leeway"),
    ({"algorithms": ["HS256"], "secret": SECRET, "leeway": -1}, {}, "jwt.leeway"),
    ({"algorithms": ["HS256"], "secret": SECRET}, {"ECHO_JWT_REQUIRED": "maybe"},
     "ECHO_JWT_REQUIRED"),
    ({"algorithms": ["HS256"], "secret": SECRET, "algorithm": "HS256"}, {}, "unknown `jwt`"),
    ({"algorithms": ["HS256"], "secret": SECRET}, {"ECHO_JWT_ALGORITHM": "HS256"},
     "ECHO_JWT_ALGORITHM"),
    ({"algorithms": ["HS256"], "secret": SECRET, "audience": 5}, {}, "jwt.audience"),
]


@pytest.mark.parametrize(("section", "env", "message"), CONFIG_ERRORS)
def test_from_config_errors(section: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(JwtConfigError) as info:
        JwtSettings.from_config(section, env)
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_weak_rsa_public_key_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwtConfigError, match="too weak"):
        JwtSettings(algorithms=["RS256"], public_key=public_pem(weak))


def test_channel_auth_never_imports_the_server() -> None:
    code = ("import sys, channel_auth.jwt_auth, channel_auth.jwks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'echo_server'); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
