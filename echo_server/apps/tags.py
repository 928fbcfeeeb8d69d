"""Which app a channel belongs to, written into its name: an isolated app's ``presence-room``
is ``presence-room\\x1f<app id>`` everywhere behind the protocols (rooms, presence, history,
cache channels, occupancy, the cluster's relay, Redis keys), and the default app's is
``presence-room`` as always, so a single-app server, its Redis keys and a mixed-version
cluster see exactly what they saw before.

A suffix, not a prefix: the core tells a channel's kind by how its name starts
(``private-``, ``presence-``, ``#server-to-user-``), and those rules then hold unchanged.
The separator is a control character no channel name may hold: every name that enters (a
client's subscribe, an API's publish or query, a broadcast source's event) is checked
without it, so no app can name another's channel. The tag goes on where a name enters
(``core.channels`` for clients, the HTTP APIs) and comes off where it leaves (the Pusher
wire, the APIs' answers, webhooks): each at most once per event, never per recipient.
"""

from __future__ import annotations

SEPARATOR = "\x1f"


def tag_of(app_id: str) -> str:
    """What an isolated app's channel names end with."""
    return SEPARATOR + app_id


def untagged(channel: str) -> str:
    """The name the app's clients know."""
    return channel.partition(SEPARATOR)[0]


def app_tag(channel: str) -> str:
    """The tag a channel name carries ("" for the default app's)."""
    at = channel.find(SEPARATOR)
    return "" if at < 0 else channel[at:]


def in_app(names: dict[str, int], tag: str) -> dict[str, int]:
    """An app's own entries of a name -> count table, under the names its clients know."""
    if not tag:
        return {name: count for name, count in names.items() if SEPARATOR not in name}
    return {name[:-len(tag)]: count for name, count in names.items() if name.endswith(tag)
            and SEPARATOR not in name[:-len(tag)]}
