"""Local channel rules: decide common channels from the handshake's JWT claims,
without an HTTP round trip to the Laravel app.

Configured under ``channels`` in laravel-echo-server.json (off unless present)::

    "channels": {
        "private-admin-dashboard.{id}": {"require": {"sub": "{id}"}},
        "presence-leads-management": {"require": {"role": ["admin", "manager"]},
                                      "user_id": "sub", "user_info": ["name", "email"]}
    }

A pattern's ``{name}`` matches one dot-free segment and can be used in
``require`` values. ``require`` maps a claim to the value it must have (or a
list of accepted values); ``{}`` admits any verified user. A rule decides only
for sockets with verified claims: anonymous sockets, and channels no rule
matches, fall through to the next authorizer (the HTTP callback), so a
session-cookie login keeps working beside token logins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .authorizer import AuthRequest, AuthResult, ChannelAuthorizer


class RuleConfigError(ValueError):
    pass


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:match.start()]))
        out.append(f"(?P<{match.group(1)}>[^.]+)")
        pos = match.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """``a.b`` reads nested claims (``{"a": {"b": 1}}``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(slots=True)
class ChannelRule:
    pattern: str
    regex: re.Pattern[str]
    require: dict[str, Any]
    user_id: str
    user_info: list[str] | dict[str, str] | None

    def check(self, params: dict[str, str], claims: Mapping[str, Any]) -> bool:
        for claim, wanted in self.require.items():
            actual = _claim(claims, claim)
            options = wanted if isinstance(wanted, list) else [wanted]
            expanded = [_PLACEHOLDER.sub(lambda m: params.get(m.group(1), ""), str(option))
                        for option in options]
            values = actual if isinstance(actual, list) else [actual]
            if not any(v is not None and str(v) in expanded for v in values):
                return False
        return True

    def channel_data(self, claims: Mapping[str, Any]) -> dict[str, Any] | None:
        user_id = _claim(claims, self.user_id)
        if user_id is None:
            return None
        if isinstance(self.user_info, dict):
            info = {name: _claim(claims, path) for name, path in self.user_info.items()}
        elif self.user_info:
            info = {path.rsplit(".", 1)[-1]: _claim(claims, path) for path in self.user_info}
        else:
            info = {}
        return {"user_id": user_id, "user_info": info}


def parse_rules(section: Mapping[str, Any] | None) -> list[ChannelRule]:
    rules: list[ChannelRule] = []
    for pattern, spec in (section or {}).items():
        if not isinstance(spec, Mapping):
            raise RuleConfigError(f"channels[{pattern!r}] must be an object")
        require = spec.get("require", {})
        if not isinstance(require, Mapping):
            raise RuleConfigError(f"channels[{pattern!r}].require must be an object")
        user_info = spec.get("user_info")
        if user_info is not None and not isinstance(user_info, list | dict):
            raise RuleConfigError(f"channels[{pattern!r}].user_info must be a list or object")
        rules.append(ChannelRule(str(pattern), _compile(str(pattern)), dict(require),
                                 str(spec.get("user_id", "sub")), user_info))
    return rules


class RuleAuthorizer:
    """Rules first; whatever they do not decide goes to ``fallback``."""

    def __init__(self, rules: Sequence[ChannelRule], fallback: ChannelAuthorizer) -> None:
        self.rules = rules
        self.fallback = fallback

    def decide(self, request: AuthRequest) -> AuthResult | None:
        if request.claims is None:
            return None
        for rule in self.rules:
            match = rule.regex.match(request.channel)
            if match is None:
                continue
            if not rule.check(match.groupdict(), request.claims):
                return AuthResult(403, reason=f"channel rule {rule.pattern!r} refused")
            if request.channel.startswith("presence-"):
                data = rule.channel_data(request.claims)
                if data is None:
                    return AuthResult(403, reason=f"no {rule.user_id!r} claim for presence")
                return AuthResult(200, data)
            return AuthResult(200)
        return None

    async def authorize(self, request: AuthRequest) -> AuthResult:
        decided = self.decide(request)
        if decided is not None:
            return decided
        return await self.fallback.authorize(request)

    async def close(self) -> None:
        close = getattr(self.fallback, "close", None)
        if close is not None:
            await close()
