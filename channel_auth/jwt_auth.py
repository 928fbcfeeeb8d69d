"""JWT authentication of the Socket.IO handshake: a token in, verified claims out.

Everything an attacker controls is treated as a hint at most. The algorithms come from the
settings, never from the token: the header's ``alg`` must be one of them and must fit the key it
would be checked with (so an HS256 token can never be verified with an RSA public key used as an
HMAC secret, and ``alg: none`` is never accepted). Settings that could make that confusion
possible are refused when they are loaded, not when the first token arrives.

What to do with a refusal (the protocol's own error, a metric, a log line) is the transport's
business: :class:`AuthenticationError` carries a short ``reason`` label for metrics and a
message that is safe to send to the client. Neither ever contains the token.

About 550 lines: the settings, the key loading and the verification stay together, because
each check depends on another (an algorithm must fit its key, a key must fit its setting).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from .jwks import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    PRIVATE_KEY_TYPES,
    SUPPORTED_ALGORITHMS,
    JwksCache,
    KeyLookupError,
    PublicKey,
    describe_key,
    key_fits,
    key_weakness,
)

ENV_PREFIX = "ECHO_JWT_"
# Far beyond any real JWT; bounds the work a hostile handshake can cause.
MAX_TOKEN_LENGTH = 16384
# RFC 7518 §3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class JwtConfigError(ValueError):
    """Bad ``jwt`` settings; the message names the setting and never echoes a secret."""


_MESSAGES = {
    "missing": "authentication required",
    "expired": "token expired",
    "not_yet_valid": "token not yet valid",
    "invalid_signature": "invalid token signature",
    "bad_audience": "token audience not accepted",
    "bad_issuer": "token issuer not accepted",
    "bad_algorithm": "token algorithm not accepted",
    "unknown_kid": "token signing key unknown",
    "missing_claim": "token lacks a required claim",
    "malformed": "malformed token",
    "jwks_unavailable": "signing keys unavailable",
    "invalid": "invalid token",
}


class AuthenticationError(Exception):
    """A refused handshake. ``reason`` is a metric label; ``str()`` is safe for the client.

    ``source`` names where the token was found (``auth.token``, ``auth.headers``, ``query``,
    ``header``, ``cookie``), or is None when there was none; it is fine to log, the token is not.
    """

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(_MESSAGES.get(reason, _MESSAGES["invalid"]))
        self.reason = reason
        self.source = source


# --------------------------------------------------------------------------- settings

@dataclass
class JwtSettings:
    """The ``jwt`` section of ``laravel-echo-server.json``; validated on construction."""

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    algorithms: list[str] = field(default_factory=list)
    issuer: str | None = None
    audience: str | list[str] | None = None
    leeway: float = 0.0
    required: bool = True
    cookie: str | None = None
    query_param: str = "token"
    expiry_grace: float = 0.0
    jwks_cache_seconds: float = 300.0
    jwks_timeout: float = 5.0
    # Minimum time between two JWKS fetches caused by unknown ``kid`` values (or failures).
    jwks_refresh_interval: float = 30.0
    require_exp: bool = False

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def from_config(cls, section: object,
                    environ: Mapping[str, str]) -> JwtSettings | None:
        """Settings from the ``jwt`` section and ``ECHO_JWT_*`` (env wins, empty env is unset).

        None when neither configures anything: JWT is off by default. ``"jwt": false`` is the
        same as no section. Raises JwtConfigError for anything unusable."""
        env = {name[len(ENV_PREFIX):].lower(): value for name, value in environ.items()
               if name.startswith(ENV_PREFIX) and value.strip()}
        if section is None or section is False:
            if not env:
                return None
            section = {}
        if not isinstance(section, Mapping):
            raise JwtConfigError("`jwt` must be an object")
        unknown = sorted(set(section) - _CONFIG_KEYS)
        if unknown:
            raise JwtConfigError(f"unknown `jwt` setting(s): {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(_CONFIG_KEYS))})")
        unknown = sorted(set(env) - _CONFIG_KEYS)
        if unknown:
            names = ", ".join(ENV_PREFIX + name.upper() for name in unknown)
            raise JwtConfigError(f"unknown environment variable(s): {names}")

        def get(name: str) -> tuple[Any, str]:
            if name in env:
                return env[name], ENV_PREFIX + name.upper()
            return section.get(name), f"jwt.{name}"

        values: dict[str, Any] = {}
        for name in ("secret", "jwks_url", "issuer", "cookie", "query_param"):
            value, where = get(name)
            if value is not None:
                values[name] = _text(value, where)
        for name in ("leeway", "expiry_grace", "jwks_cache_seconds", "jwks_timeout",
                     "jwks_refresh_interval"):
            value, where = get(name)
            if value is not None:
                values[name] = _number(value, where)
        for name in ("required", "require_exp"):
            value, where = get(name)
            if value is not None:
                values[name] = _flag(value, where)
        value, where = get("algorithms")
        if value is not None:
            values["algorithms"] = _text_list(value, where, split=True)
        value, where = get("audience")
        if value is not None:
            audience = _text_list(value, where, split=_is_env(where))
            values["audience"] = audience[0] if len(audience) == 1 else audience
        values["public_key"] = _public_key_text(get("public_key"), get("public_key_path"))
        return cls(**values)

    # -- validation

    def _validate(self) -> None:
        algorithms = self.algorithms
        if isinstance(algorithms, str) or not isinstance(algorithms, list | tuple):
            raise JwtConfigError("jwt.algorithms must be a list, e.g. [\"RS256\"]")
        if not algorithms:
            raise JwtConfigError("jwt.algorithms is required (e.g. [\"HS256\"] or [\"RS256\"]); "
                                 "the algorithm is never taken from the token")
        for alg in algorithms:
            if not isinstance(alg, str) or alg.lower() == "none":
                raise JwtConfigError(f"jwt.algorithms: {alg!r} is not allowed")
            if alg not in SUPPORTED_ALGORITHMS:
                raise JwtConfigError(f"jwt.algorithms: unknown algorithm {alg!r} "
                                     f"(supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))})")
        self.algorithms = list(dict.fromkeys(algorithms))
        hmac_algs = [alg for alg in self.algorithms if alg in HMAC_ALGORITHMS]
        asym_algs = [alg for alg in self.algorithms if alg in ASYMMETRIC_ALGORITHMS]
        self._validate_secret(hmac_algs)
        self._validate_asymmetric(asym_algs)
        for name in ("leeway", "expiry_grace", "jwks_cache_seconds", "jwks_refresh_interval"):
            _number(getattr(self, name), f"jwt.{name}")
        if _number(self.jwks_timeout, "jwt.jwks_timeout") <= 0:
            raise JwtConfigError("jwt.jwks_timeout must be above 0")
        if not isinstance(self.required, bool) or not isinstance(self.require_exp, bool):
            raise JwtConfigError("jwt.required and jwt.require_exp must be true or false")
        if not isinstance(self.query_param, str) or not self.query_param:
            raise JwtConfigError("jwt.query_param must be a non-empty string")
        if self.cookie is not None and (not isinstance(self.cookie, str) or not self.cookie):
            raise JwtConfigError("jwt.cookie must be a cookie name")
        if self.issuer is not None and (not isinstance(self.issuer, str) or not self.issuer):
            raise JwtConfigError("jwt.issuer must be a non-empty string")
        audience = self.audience
        if audience is not None and not (
                (isinstance(audience, str) and audience)
                or (isinstance(audience, list) and audience
                    and all(isinstance(a, str) and a for a in audience))):
            raise JwtConfigError("jwt.audience must be a string or a list of strings")

    def _validate_secret(self, hmac_algs: list[str]) -> None:
        if self.secret is None:
            if hmac_algs:
                raise JwtConfigError(f"jwt.algorithms has {', '.join(hmac_algs)}, which needs "
                                     "jwt.secret (ECHO_JWT_SECRET)")
            return
        if not isinstance(self.secret, str) or not self.secret:
            raise JwtConfigError("jwt.secret must be a non-empty string")
        if not hmac_algs:
            raise JwtConfigError("jwt.secret is set but jwt.algorithms has no HS256/HS384/HS512")
        if _looks_like_key_material(self.secret):
            raise JwtConfigError("jwt.secret looks like a public/private key; a key is never "
                                 "used as an HMAC secret (HS/RS confusion). Put a public key "
                                 "in jwt.public_key with RS*/ES*/EdDSA algorithms")
        needed = max(_HMAC_MIN_BYTES[alg] for alg in hmac_algs)
        if len(self.secret.encode()) < needed:
            raise JwtConfigError(f"jwt.secret is shorter than the {needed} bytes "
                                 f"{', '.join(hmac_algs)} need (RFC 7518 §3.2)")

    def _validate_asymmetric(self, asym_algs: list[str]) -> None:
        if self.public_key is not None and self.jwks_url is not None:
            raise JwtConfigError("jwt.public_key and jwt.jwks_url are exclusive; use one")
        if self.public_key is None and self.jwks_url is None:
            if asym_algs:
                raise JwtConfigError(f"jwt.algorithms has {', '.join(asym_algs)}, which needs "
                                     "jwt.public_key, jwt.public_key_path or jwt.jwks_url")
            return
        if not asym_algs:
            raise JwtConfigError("a public key or JWKS URL is set but jwt.algorithms has no "
                                 "RS*/PS*/ES*/EdDSA algorithm")
        if self.public_key is not None:
            key = load_public_key(self.public_key)
            misfits = [alg for alg in asym_algs if not key_fits(alg, key)]
            if misfits:
                raise JwtConfigError(f"jwt.public_key is {describe_key(key)}, which cannot "
                                     f"verify {', '.join(misfits)}")
            weakness = key_weakness(key)
            if weakness:
                raise JwtConfigError(f"jwt.public_key is too weak: {weakness}")
        else:
            url = self.jwks_url
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise JwtConfigError("jwt.jwks_url must be an http(s) URL")
            if not self.issuer:
                raise JwtConfigError("jwt.jwks_url needs jwt.issuer: JWKS keys are only "
                                     "trusted for the one issuer they are fetched for")


_CONFIG_KEYS = frozenset({
    "secret", "public_key", "public_key_path", "jwks_url", "algorithms", "issuer", "audience",
    "leeway", "required", "cookie", "query_param", "expiry_grace", "jwks_cache_seconds",
    "jwks_timeout", "jwks_refresh_interval", "require_exp",
})


def _is_env(where: str) -> bool:
    return where.startswith(ENV_PREFIX)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JwtConfigError(f"{where} must be a non-empty string")
    return value.strip()


def _text_list(value: Any, where: str, *, split: bool) -> list[str]:
    if isinstance(value, str):
        items = value.split(",") if split else [value]
    elif isinstance(value, list):
        items = value
    else:
        raise JwtConfigError(f"{where} must be a string or a list of strings")
    if not all(isinstance(item, str) for item in items):
        raise JwtConfigError(f"{where} must contain strings only")
    result = [item.strip() for item in items if item.strip()]
    if not result:
        raise JwtConfigError(f"{where} is empty")
    return result


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise JwtConfigError(f"{where} must be a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise JwtConfigError(f"{where} must be a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise JwtConfigError(f"{where} must be a finite number >= 0")
    return number


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "on"}:
            return True
        if lowered in {"false", "0", "no", "off"}:
            return False
    raise JwtConfigError(f"{where} must be true or false")


def _public_key_text(inline: tuple[Any, str], path: tuple[Any, str]) -> str | None:
    (key, key_where), (key_path, path_where) = inline, path
    if key is not None and key_path is not None:
        raise JwtConfigError(f"{key_where} and {path_where} are exclusive; use one")
    if key is not None:
        text = _text(key, key_where)
        # Environment variables often carry a PEM with its newlines written as "\n".
        return text.replace("\\n", "\n") if "\n" not in text else text
    if key_path is None:
        return None
    filename = _text(key_path, path_where)
    try:
        with open(filename, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise JwtConfigError(f"{path_where}: cannot read {filename}: {detail}") from None


def _looks_like_key_material(secret: str) -> bool:
    text = secret.strip()
    return ("-----BEGIN" in text or text.startswith(("ssh-", "ecdsa-sha2-"))
            or (text.startswith("{") and '"kty"' in text))


def load_public_key(text: str) -> PublicKey:
    """A PEM public key or certificate (or an OpenSSH public key); private keys are refused,
    so a signing key is never copied to the server by mistake."""
    data = text.strip().encode()
    if b"PRIVATE KEY-----" in data:
        raise JwtConfigError("jwt.public_key holds a private key; give the public key only")
    key: Any
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = load_pem_x509_certificate(data).public_key()
        elif data.startswith((b"ssh-", b"ecdsa-sha2-")):
            key = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise JwtConfigError(f"jwt.public_key is not a readable PEM public key "
                             f"({type(exc).__name__})") from None
    if isinstance(key, PRIVATE_KEY_TYPES) or not _is_public_key(key):
        raise JwtConfigError(f"jwt.public_key: {describe_key(key)} is not supported")
    return key


def _is_public_key(key: object) -> bool:
    return any(key_fits(alg, key) for alg in ASYMMETRIC_ALGORITHMS)


# --------------------------------------------------------------------------- token sources

@dataclass
class TokenSources:
    """What the transport knows of a handshake, as plain data."""

    connect_payload: Any = None  # the EIO4 CONNECT (`40{...}`) payload; None for EIO3
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names


def _bearer(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _cookie(header: Any, name: str) -> str | None:
    """A cookie by name, parsed leniently: one malformed cookie must not hide the others
    (``http.cookies`` gives up on the whole header)."""
    if not isinstance(header, str):
        return None
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return unquote(value).strip() or None
    return None


def find_token(sources: TokenSources, settings: JwtSettings) -> tuple[str, str] | None:
    """``(token, source)``, first found wins, in the order of how deliberately a client sent it:
    the Socket.IO v5 auth payload (``auth.token``, then ``auth.headers.Authorization: Bearer``,
    which Echo 2 fills from ``bearerToken``), the ``token`` query parameter (all socket.io-client
    2.x can send besides cookies), the handshake ``Authorization`` header, the cookie."""
    payload = sources.connect_payload
    if isinstance(payload, Mapping):
        token = payload.get("token")
        if isinstance(token, str) and token.strip():
            return token.strip(), "auth.token"
        headers = payload.get("headers")
        if isinstance(headers, Mapping):
            for key, value in headers.items():
                if isinstance(key, str) and key.lower() == "authorization":
                    found = _bearer(value)
                    if found:
                        return found, "auth.headers"
    value = sources.query.get(settings.query_param)
    if isinstance(value, str) and value.strip():
        return value.strip(), "query"
    found = _bearer(sources.headers.get("authorization"))
    if found:
        return found, "header"
    if settings.cookie:
        found = _cookie(sources.headers.get("cookie"), settings.cookie)
        if found:
            return found, "cookie"
    return None


# --------------------------------------------------------------------------- verification

def _decode_error_reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "not_yet_valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "bad_audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "bad_issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return {"aud": "bad_audience", "iss": "bad_issuer"}.get(exc.claim, "missing_claim")
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid_signature"
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return "bad_algorithm"
    if isinstance(exc, jwt.DecodeError | jwt.InvalidIssuedAtError):
        return "malformed"
    return "invalid"


class JwtAuthenticator:
    def __init__(self, settings: JwtSettings, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        """``clock`` paces JWKS refreshes; ``wall_clock`` is compared with ``exp``."""
        self.settings = settings
        self._wall_clock = wall_clock
        self._secret = settings.secret.encode() if settings.secret else None
        self._public_key = load_public_key(settings.public_key) if settings.public_key else None
        self._jwks: JwksCache | None = None
        if settings.jwks_url:
            assert settings.issuer  # validated: JWKS keys belong to one issuer
            self._jwks = JwksCache(
                settings.jwks_url, settings.issuer, settings.algorithms,
                cache_seconds=settings.jwks_cache_seconds, timeout=settings.jwks_timeout,
                refresh_interval=settings.jwks_refresh_interval, clock=clock)
        required = ["exp"] if settings.require_exp else []
        self._options: Any = {"require": required, "enforce_minimum_key_length": True,
                              "verify_signature": True, "verify_exp": True, "verify_nbf": True,
                              "verify_iat": True, "verify_aud": True, "verify_iss": True}

    async def authenticate(self, sources: TokenSources) -> dict[str, Any] | None:
        """The claims of the handshake's token.

        Without a token: None (an anonymous connection) when ``required`` is false, else
        AuthenticationError("missing"). A token that is present but not valid is refused even
        when ``required`` is false: a client that presents credentials means to be that user,
        and quietly treating it as a guest would hide expired or forged tokens."""
        found = find_token(sources, self.settings)
        if found is None:
            if self.settings.required:
                raise AuthenticationError("missing")
            return None
        token, source = found
        try:
            return await self.verify(token)
        except AuthenticationError as exc:
            exc.source = source
            raise

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; AuthenticationError otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthenticationError("malformed")
        if alg not in self.settings.algorithms:
            raise AuthenticationError("bad_algorithm")
        key = await self._key_for(alg, header, token)
        try:
            claims = jwt.decode(token, key, algorithms=[alg], options=self._options,
                                audience=self.settings.audience, issuer=self.settings.issuer,
                                leeway=self.settings.leeway)
        except jwt.PyJWTError as exc:
            raise AuthenticationError(_decode_error_reason(exc)) from None
        except (ValueError, TypeError, OverflowError):
            raise AuthenticationError("malformed") from None
        return claims

    async def _key_for(self, alg: str, header: Mapping[str, Any], token: str) -> Any:
        if alg in HMAC_ALGORITHMS:
            if self._secret is None:
                raise AuthenticationError("bad_algorithm")
            return self._secret
        if self._public_key is not None:
            if not key_fits(alg, self._public_key):
                raise AuthenticationError("bad_algorithm")
            return self._public_key
        if self._jwks is None:
            raise AuthenticationError("bad_algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("unknown_kid")
        # A token for another issuer is refused before its kid can make us fetch anything.
        if _unverified_issuer(token) != self.settings.issuer:
            raise AuthenticationError("bad_issuer")
        try:
            key = await self._jwks.get_key(kid, alg)
        except KeyLookupError as exc:
            raise AuthenticationError(exc.reason) from None
        if not key_fits(alg, key):
            raise AuthenticationError("bad_algorithm")
        return key

    def expires_in(self, claims: Mapping[str, Any]) -> float | None:
        """Seconds until a socket authenticated with ``claims`` must be dropped, never below 0;
        None without ``exp``. The leeway counts as at the handshake: a token accepted within it
        must not be dropped at once, or the client would reconnect with it in a loop."""
        exp = claims.get("exp")
        if exp is None or isinstance(exp, bool):
            return None
        try:
            deadline = float(exp)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(deadline):
            return None
        remaining = deadline + self.settings.leeway + self.settings.expiry_grace
        return max(0.0, remaining - self._wall_clock())

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()


def _unverified_issuer(token: str) -> Any:
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthenticationError("malformed") from None
    return payload.get("iss")
