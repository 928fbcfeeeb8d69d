"""Several events read together, written so that each websocket gets its frames of the
batch in one write (one syscall instead of one per event), in publish order: shared by
every wire. The loop runs once per recipient, so nothing in it is a Python call but the
writes themselves."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

COALESCE_LIMIT = 64 * 1024  # bytes of frames gathered per client before a write

# One event: (members, websocket frame, message bytes, excluded member). A member is anything
# with a ``session`` whose ``ws`` is its websocket, or None while it polls (then
# ``session.send_prebuilt(text, frame)`` queues the message for its next poll).
Framed = tuple[Collection[Any], bytes, bytes, Any]


def write_coalesced(batch: list[Framed]) -> int:
    """How many messages were written or queued."""
    pending: dict[Any, list[bytes]] = {}
    # Bytes gathered per client, kept only once a client has a second frame: with one
    # recipient per event (private channels) most clients never do.
    sizes: dict[Any, int] = {}
    count = 0
    for members, frame, message, exclude in batch:
        packet: str | None = None
        for member in members:
            if member is exclude:
                continue
            count += 1
            session = member.session
            ws = session.ws
            if ws is None:
                if packet is None:
                    packet = message.decode("utf-8")
                session.send_prebuilt(packet, frame)
                continue
            frames = pending.get(ws)
            if frames is None:
                pending[ws] = [frame]
                continue
            frames.append(frame)
            total = (sizes.get(ws) or len(frames[0])) + len(frame)
            if total >= COALESCE_LIMIT:
                # Bounded: a huge burst goes out in pieces, keeping each write small
                # enough not to stall the client's TCP window for long.
                ws.write(b"".join(frames))
                del pending[ws]
                total = 0
            sizes[ws] = total
    for ws, frames in pending.items():
        ws.write(frames[0] if len(frames) == 1 else b"".join(frames))
    return count
