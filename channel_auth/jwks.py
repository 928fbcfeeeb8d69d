"""Verification keys: which key may check which algorithm, and keys from a JWKS endpoint.

The algorithm a token claims is attacker-chosen, so a key is only ever used for the algorithms
its type can verify (an RSA key never becomes an HMAC secret, a P-256 key never checks ES384).

Keys fetched from a JWKS endpoint are cached by issuer and ``kid`` together: the configured
issuer is part of every cache key, so a key published for one issuer can never verify a token
for another, even if two providers reuse a ``kid``. An unknown ``kid`` triggers a refresh (that
is how key rotation shows up), but at most once per ``refresh_interval``, so a flood of tokens
with random ``kid`` values costs the endpoint one request, not one per token. Failed fetches
are rate limited the same way, and keep the keys already known: an identity provider's outage
must not refuse every connection whose key we already trust.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

log = logging.getLogger("channel_auth.jwks")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES256K": ec.SECP256K1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
    "ES521": ec.SECP521R1,
}
ASYMMETRIC_ALGORITHMS = _RSA_ALGORITHMS | frozenset(_EC_CURVES) | {"EdDSA"}
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS

# NIST SP 800-131A; PyJWT warns below it, we refuse such keys outright.
MIN_RSA_BITS = 2048

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
             | ed448.Ed448PublicKey)
PRIVATE_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                      ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


def key_fits(alg: str, key: object) -> bool:
    """Whether ``key`` is the kind of public key ``alg`` is verified with (never for HS*)."""
    if alg in _RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    curve = _EC_CURVES.get(alg)
    if curve is not None:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def key_weakness(key: object) -> str | None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} needed)"
    return None


def describe_key(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "an EdDSA key"
    return f"a {type(key).__name__}"


def usable_algorithms(key: object, algorithms: Iterable[str]) -> frozenset[str]:
    return frozenset(alg for alg in algorithms if key_fits(alg, key))


class KeyLookupError(Exception):
    """``reason`` is one of ``unknown_kid``, ``jwks_unavailable``, ``bad_algorithm``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CachedKey:
    key: PublicKey
    algorithms: frozenset[str]


def safe_url(url: str) -> str:
    """For logs: no credentials or query string (either may carry a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class JwksCache:
    def __init__(self, url: str, issuer: str, algorithms: Iterable[str], *,
                 cache_seconds: float = 300.0, timeout: float = 5.0,
                 refresh_interval: float = 30.0, max_bytes: int = 1 << 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.issuer = issuer
        self.algorithms = frozenset(algorithms) & ASYMMETRIC_ALGORITHMS
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.refresh_interval = refresh_interval
        self.max_bytes = max_bytes
        self._clock = clock
        self._keys: dict[tuple[str, str], CachedKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self._session: Any = None

    async def get_key(self, kid: str, alg: str) -> PublicKey:
        """The key for ``kid`` of our issuer, usable for ``alg``; raises KeyLookupError."""
        if self._fetched_at is None or self._clock() - self._fetched_at >= self.cache_seconds:
            await self.refresh()
        entry = self._keys.get((self.issuer, kid))
        if entry is None:
            await self.refresh()
            entry = self._keys.get((self.issuer, kid))
        if entry is None:
            raise KeyLookupError("jwks_unavailable" if self._fetched_at is None else "unknown_kid")
        if alg not in entry.algorithms:
            raise KeyLookupError("bad_algorithm")
        return entry.key

    async def refresh(self) -> bool:
        """Fetch the set unless an attempt was made within ``refresh_interval``.

        Concurrent callers queue on the lock and then find the attempt just made, so a burst of
        unknown ``kid`` values results in a single request."""
        async with self._lock:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self.refresh_interval:
                return False
            self._last_attempt = now
            try:
                keys = await self._fetch()
            except KeyLookupError:
                return False
            self._keys = keys
            self._fetched_at = self._clock()
            return True

    async def _client(self) -> Any:
        if self._session is None:
            from echo_common.http_client import outgoing_session

            self._session = outgoing_session(timeout=self.timeout)
        return self._session

    async def _fetch(self) -> dict[tuple[str, str], CachedKey]:
        import aiohttp

        session = await self._client()
        where = safe_url(self.url)
        try:
            # No redirects: the operator named this URL, and a redirect could downgrade to http.
            async with session.get(self.url, headers={"Accept": "application/json"},
                                   allow_redirects=False) as response:
                if response.status != 200:
                    log.warning("JWKS %s answered HTTP %d", where, response.status)
                    raise KeyLookupError("jwks_unavailable")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_bytes:
                        log.warning("JWKS %s is larger than %d bytes", where, self.max_bytes)
                        raise KeyLookupError("jwks_unavailable")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("JWKS %s unreachable: %s", where, type(exc).__name__)
            raise KeyLookupError("jwks_unavailable") from None
        try:
            document = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            log.warning("JWKS %s did not answer JSON", where)
            raise KeyLookupError("jwks_unavailable") from None
        keys = self.parse(document)
        if not keys:
            log.warning("JWKS %s holds no key usable for %s", where, sorted(self.algorithms))
            raise KeyLookupError("jwks_unavailable")
        return keys

    def parse(self, document: Any) -> dict[tuple[str, str], CachedKey]:
        """The usable signing keys of a JWK set, each with the algorithms it may verify.

        Skipped: keys without ``kid``, not for signatures, symmetric (``oct``: a published
        HMAC secret must never verify anything), with a JWK ``alg`` outside ours, or weak."""
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            return {}
        keys: dict[tuple[str, str], CachedKey] = {}
        for jwk_data in raw_keys:
            entry = self._parse_one(jwk_data)
            if entry is None:
                continue
            cache_key = (self.issuer, jwk_data["kid"])
            if cache_key in keys:
                log.warning("JWKS %s lists kid %r twice; using the first",
                            safe_url(self.url), jwk_data["kid"])
                continue
            keys[cache_key] = entry
        return keys

    def _parse_one(self, jwk_data: Any) -> CachedKey | None:
        if not isinstance(jwk_data, dict):
            return None
        kid = jwk_data.get("kid")
        if not isinstance(kid, str) or not kid:
            return None
        if jwk_data.get("use", "sig") != "sig" or jwk_data.get("kty") == "oct":
            return None
        key_ops = jwk_data.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            return None
        jwk_alg = jwk_data.get("alg")
        if jwk_alg is not None and jwk_alg not in self.algorithms:
            return None
        try:
            key: Any = jwt.PyJWK(jwk_data).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None
        if isinstance(key, PRIVATE_KEY_TYPES):
            key = key.public_key()
        allowed = usable_algorithms(key, self.algorithms)
        if jwk_alg is not None:
            allowed &= {jwk_alg}
        weakness = key_weakness(key)
        if weakness:
            log.warning("JWKS %s: skipping kid %r, %s", safe_url(self.url), kid, weakness)
            return None
        return CachedKey(key, allowed) if allowed else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
