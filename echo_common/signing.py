"""HMAC-SHA256 with an app's secret, and constant-time comparison of secrets, in one place.

Everything Pusher signs is the hex HMAC-SHA256 of some text with the app secret: a private
channel's ``socket_id:channel``, a sign-in's ``socket_id::user::data``, an HTTP API request's
``METHOD\\npath\\nquery``, a webhook's body. Text that reaches these functions often comes from
the network, so it is encoded here (UTF-8, ``surrogatepass``: no str Python can hold makes
them raise) and compared as bytes: ``hmac.compare_digest`` raises TypeError on non-ASCII str.
"""

from __future__ import annotations

import hashlib
import hmac


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def sign(secret: str | bytes, message: str | bytes) -> str:
    """The hex HMAC-SHA256 of ``message`` with ``secret``."""
    return hmac.new(_bytes(secret), _bytes(message), hashlib.sha256).hexdigest()


def same_secret(given: str | bytes, expected: str | bytes) -> bool:
    """In constant time, so the time a wrong guess takes tells nothing about the secret
    (an API key, a metrics token, a signature)."""
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def verify(secret: str | bytes, message: str | bytes, given: str | bytes) -> bool:
    """Whether ``given`` is ``message``'s signature with ``secret``."""
    return same_secret(given, sign(secret, message))
