"""The signed query of a Pusher API request read two ways: ``canonical`` takes the clients'
usual query as it arrived (the hot path), ``parsed`` any query from its parsed form. Where
the first answers, it must answer as the second does, or a request the general path refuses
(another order of the signed parameters, a repeated one, an escape) would get through."""

from __future__ import annotations

import pytest

from echo_server.transport.http import parse_query
from echo_server.web.pusher_auth import canonical, parsed

SIGNATURE = "a" * 64
MD5 = "0123456789abcdef0123456789abcdef"
# pusher-php-server's and pusher-http-node's POST: sorted, auth_signature appended last.
USUAL = (f"auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&body_md5={MD5}"
         f"&auth_signature={SIGNATURE}")


@pytest.mark.parametrize("query", [
    USUAL,
    USUAL.replace("app-key", "k=with=equals"),
    USUAL.replace("app-key", "clé"),
    USUAL.replace("1700000000", "17"),
])
def test_the_usual_query_is_read_as_it_arrived(query: str) -> None:
    assert canonical(query) == parsed(parse_query(query))


@pytest.mark.parametrize("query", [
    # The Python `pusher` package's order (auth_signature sorted in), and others.
    f"auth_key=app-key&auth_signature={SIGNATURE}&auth_timestamp=1700000000"
    f"&auth_version=1.0&body_md5={MD5}",
    f"auth_timestamp=1700000000&auth_key=app-key&auth_version=1.0&body_md5={MD5}"
    f"&auth_signature={SIGNATURE}",
    # Signed as it is, but read otherwise: the last of a repeated parameter counts.
    USUAL.replace("&body_md5=", f"&body_md5={MD5}&body_md5="),
    USUAL.replace("auth_key=app-key", "auth_key=one&auth_key=two"),
    USUAL + "&auth_signature=" + "b" * 64,
    USUAL + "&info=subscription_count",
    # Escapes the parsed form unquotes.
    USUAL.replace("app-key", "app%2Dkey"),
    USUAL.replace("app-key", "app+key"),
    USUAL.replace("auth_version=1.0", "auth%5Fversion=1.0"),
    # Values the checks below refuse, each with its own message.
    USUAL.replace("auth_version=1.0", "auth_version=2.0"),
    USUAL.replace("auth_timestamp=1700000000", "auth_timestamp=17e8"),
    USUAL.replace("auth_timestamp=1700000000", "auth_timestamp="),
    USUAL.replace(MD5, MD5.upper()),
    USUAL.replace(SIGNATURE, SIGNATURE.upper() + "é"),
    USUAL.replace(f"&auth_signature={SIGNATURE}", "&auth_signature="),
    USUAL.replace("app-key", ""),
    # A GET's query: no body_md5.
    f"auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&auth_signature={SIGNATURE}",
])
def test_any_other_query_is_left_to_the_parsed_reading(query: str) -> None:
    assert canonical(query) is None
