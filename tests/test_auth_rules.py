"""Local channel rules and the auth-answer cache, against a real HTTP auth backend."""

from __future__ import annotations

import pytest

from channel_auth import AuthRequest
from channel_auth.cache import CachingAuthorizer
from channel_auth.http_callback import HttpCallbackAuthorizer
from channel_auth.rules import RuleAuthorizer, RuleConfigError, parse_rules
from tests.support.auth_backend import AuthBackend

RULES = {
    "private-admin-dashboard.{id}": {"require": {"sub": "{id}"}},
    "presence-leads-management": {"require": {"role": ["admin", "manager"]},
                                  "user_id": "sub", "user_info": ["name", "profile.team"]},
    "private-anyone": {},
}


def _request(channel: str, claims: dict | None, **headers: str) -> AuthRequest:
    return AuthRequest(channel=channel, socket_id="s1", headers=dict(headers), claims=claims)


@pytest.fixture
async def http(auth_backend: AuthBackend) -> HttpCallbackAuthorizer:
    authorizer = HttpCallbackAuthorizer([auth_backend.url], "/broadcasting/auth")
    yield authorizer
    await authorizer.close()


async def test_rules_decide_from_claims(http: HttpCallbackAuthorizer,
                                        auth_backend: AuthBackend) -> None:
    authorizer = RuleAuthorizer(parse_rules(RULES), http)
    admin5 = {"sub": 5, "role": "admin", "name": "Ayşe", "profile": {"team": "sales"}}

    assert (await authorizer.authorize(_request("private-admin-dashboard.5", admin5))).status \
        == 200
    refused = await authorizer.authorize(_request("private-admin-dashboard.6", admin5))
    assert refused.status == 403
    presence = await authorizer.authorize(_request("presence-leads-management", admin5))
    assert presence.status == 200
    assert presence.channel_data == {"user_id": 5,
                                     "user_info": {"name": "Ayşe", "team": "sales"}}
    viewer = {"sub": 9, "role": "viewer"}
    assert (await authorizer.authorize(_request("presence-leads-management", viewer))).status \
        == 403
    assert (await authorizer.authorize(_request("private-anyone", viewer))).status == 200
    # None of those reached Laravel.
    assert auth_backend.calls == []


async def test_unmatched_channels_and_anonymous_sockets_fall_through(
        http: HttpCallbackAuthorizer, auth_backend: AuthBackend) -> None:
    auth_backend.allow_private("private-orders")
    auth_backend.allow_private("private-admin-dashboard.5")
    authorizer = RuleAuthorizer(parse_rules(RULES), http)
    assert (await authorizer.authorize(_request("private-orders", {"sub": 1}))).status == 200
    # Anonymous (no JWT): the session cookie may still authorize through Laravel.
    result = await authorizer.authorize(_request("private-admin-dashboard.5", None,
                                                 Cookie="laravel_session=abc"))
    assert result.status == 200
    assert [c.channel for c in auth_backend.calls] == ["private-orders",
                                                      "private-admin-dashboard.5"]
    assert auth_backend.calls[1].headers["Cookie"] == "laravel_session=abc"


def test_placeholders_match_one_segment() -> None:
    (rule,) = parse_rules({"private-admin-dashboard.{id}": {"require": {"sub": "{id}"}}})
    assert rule.regex.match("private-admin-dashboard.5")
    assert rule.regex.match("private-admin-dashboard.5.extra") is None
    assert rule.regex.match("xprivate-admin-dashboard.5") is None


@pytest.mark.parametrize("section", [
    {"private-x": "yes"},
    {"private-x": {"require": ["sub"]}},
    {"presence-x": {"user_info": "name"}},
])
def test_bad_rules_are_refused_at_start(section: dict) -> None:
    with pytest.raises(RuleConfigError):
        parse_rules(section)


async def test_cache_reuses_answers_per_credentials_only(http: HttpCallbackAuthorizer,
                                                         auth_backend: AuthBackend) -> None:
    auth_backend.rules["private-orders"] = lambda call: (
        True if call.headers.get("Authorization") == "Bearer alice" else 403)
    cache = CachingAuthorizer(http, ttl=60)
    alice = _request("private-orders", None, Authorization="Bearer alice")
    mallory = _request("private-orders", None, Authorization="Bearer mallory")

    assert (await cache.authorize(alice)).status == 200
    assert (await cache.authorize(alice)).status == 200
    assert len(auth_backend.calls) == 1
    # Another user's credentials never get Alice's answer.
    assert (await cache.authorize(mallory)).status == 403
    assert (await cache.authorize(mallory)).status == 403
    assert len(auth_backend.calls) == 2
    assert cache.hits == 2


async def test_a_cookie_the_auth_host_set_never_reaches_another_client(
        http: HttpCallbackAuthorizer, auth_backend: AuthBackend) -> None:
    """Laravel answers every auth request with ``Set-Cookie: laravel_session``. A client
    that kept it (aiohttp's default jar, for host names such as ``localhost``) sent user 1's
    session with everybody's later requests: the guest got in as user 1 (issue 20)."""
    channel = "private-admin-dashboard.1"
    auth_backend.rules[channel] = lambda call: (
        True if call.headers.get("Cookie") == "laravel_session=user-1" else 403)

    def tab(cookie: str | None, **headers: str) -> AuthRequest:
        return AuthRequest(channel=channel, socket_id="s1", headers=dict(headers),
                           handshake_headers={"cookie": cookie} if cookie else {})

    assert auth_backend.url.startswith("http://localhost:")
    assert (await http.authorize(tab("laravel_session=user-1"))).status == 200
    assert (await http.authorize(tab(None))).status == 403
    assert (await http.authorize(tab("laravel_session=user-2"))).status == 403
    assert (await http.authorize(tab(None, Authorization="Bearer token-3"))).status == 403
    seen = [(call.headers.get("Cookie"), call.headers.get("Authorization"))
            for call in auth_backend.calls]
    assert seen == [("laravel_session=user-1", None), (None, None),
                    ("laravel_session=user-2", None), (None, "Bearer token-3")]


async def test_cache_keys_cover_the_auth_host_and_every_forwarded_credential(
        auth_backend: AuthBackend) -> None:
    """With several ``authHost`` entries the Referer picks one; an answer from one app is
    never reused for another, and a credential sent under any case of its name counts."""
    other = AuthBackend()
    await other.start()
    inner = HttpCallbackAuthorizer([auth_backend.url, other.url], "/broadcasting/auth")
    cache = CachingAuthorizer(inner, ttl=60)
    auth_backend.allow_private("private-orders")  # ``other`` refuses it
    try:
        def request(referer: str, **headers: str) -> AuthRequest:
            return AuthRequest(channel="private-orders", socket_id="s1", headers=headers,
                               handshake_headers={"referer": referer + "/page",
                                                  "cookie": "laravel_session=same"})

        assert (await cache.authorize(request(auth_backend.url))).status == 200
        assert (await cache.authorize(request(other.url))).status == 403
        assert (await cache.authorize(request(auth_backend.url, cookie="x=1"))).status == 200
        assert (await cache.authorize(request(auth_backend.url, Cookie="x=1"))).status == 200
        assert len(auth_backend.calls) + len(other.calls) == 3
        assert cache.hits == 1
    finally:
        await cache.close()
        await other.stop()


async def test_cache_never_keeps_failures(auth_backend: AuthBackend) -> None:
    from tests.conftest import free_port

    down = HttpCallbackAuthorizer([f"http://127.0.0.1:{free_port()}"], "/broadcasting/auth")
    cache = CachingAuthorizer(down, ttl=60)
    try:
        assert (await cache.authorize(_request("private-x", None))).status == 0
        assert (await cache.authorize(_request("private-x", None))).status == 0
        assert cache.hits == 0
    finally:
        await cache.close()


async def test_cache_expires(http: HttpCallbackAuthorizer, auth_backend: AuthBackend) -> None:
    auth_backend.allow_private("private-orders")
    cache = CachingAuthorizer(http, ttl=0.0)
    await cache.authorize(_request("private-orders", None))
    await cache.authorize(_request("private-orders", None))
    assert len(auth_backend.calls) == 2


@pytest.mark.parametrize("verify", [True, False])
async def test_auth_host_tls_is_verified_unless_told_otherwise(tmp_path, verify: bool) -> None:
    """The reference never checks the auth host's certificate; we do (authVerifyTls)."""
    import ssl

    from aiohttp import web

    from tests.test_server_process import _self_signed

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()

    async def allow(request: web.Request) -> web.Response:
        return web.json_response(True)

    app.router.add_post("/broadcasting/auth", allow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    authorizer = HttpCallbackAuthorizer([f"https://127.0.0.1:{port}"], "/broadcasting/auth",
                                        verify_tls=verify)
    try:
        result = await authorizer.authorize(_request("private-orders", None))
        if verify:
            assert result.status == 0  # a self-signed certificate is refused
            assert result.reason and "Certificate" in result.reason
        else:
            assert result.status == 200
    finally:
        await authorizer.close()
        await runner.cleanup()
