"""Comparing what a client sent with a secret, or with what a secret signs."""

from __future__ import annotations

import hmac


def same_secret(given: str, expected: str) -> bool:
    """In constant time, so the time a wrong guess takes tells nothing about the secret.
    On UTF-8 bytes: ``hmac.compare_digest`` raises TypeError on non-ASCII text, and
    ``given`` comes from the network (surrogatepass: no text it can hold makes this
    raise)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))
