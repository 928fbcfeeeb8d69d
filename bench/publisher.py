"""Publish Laravel-shaped broadcast messages to Redis, at a rate or as fast as possible.

What Laravel's RedisBroadcaster sends: ``PUBLISH <keyPrefix><channel>
{"event":"lead.assigned","data":{...,"socket":null},"socket":null}`` (``json_encode`` with its
default flags: non-ASCII escaped as ``\\uXXXX``). The payload has the shape of
``LeadAssigned::broadcastWith()`` (tests/support/seed_events.py), trimmed so that the whole
message is exactly 584 bytes, plus ``data.sent_ns``: ``time.monotonic_ns()`` (CLOCK_MONOTONIC)
taken just before the message goes to Redis, which the load generator compares with
``process.hrtime.bigint()`` (the same clock on Linux) to get publish-to-receive latency.

    python bench/publisher.py --redis-url redis://127.0.0.1:6379/0 --prefix laravel_database_ \\
        --channel bench --count 2000 --rate 0          # as fast as possible, pipelined
    python bench/publisher.py ... --channel-template 'bench.{i}' --channel-count 2000 \\
        --count 20000                                   # round-robin over 2000 channels
    python bench/publisher.py ... --rate 100 --duration 30

Prints one JSON line: published, seconds, achieved rate, events per channel, publishes that
reached no subscriber (the server was not listening), the message size and the worst lag behind
the rate schedule.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import redis

MESSAGE_BYTES = 584
EVENT = "lead.assigned"
READY_EVENT = "bench.ready"

_NOTIFICATION_TEXT = ("Zeynep Kaya adlı lead Ayşe Yılmaz adlı admine atandı 🎯 "
                      "Lütfen müşteriyle bugün iletişime geçin ve durumu güncelleyin.")


def laravel_json(value: Any) -> str:
    """PHP ``json_encode`` with default flags: compact, ``\\uXXXX`` for non-ASCII, ``\\/``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def lead_assigned_data(message: str) -> dict[str, Any]:
    new_admin = {"id": 5, "name": "Ayşe Yılmaz", "leads_today": 12}
    return {
        "lead": {"id": 42, "name": "Zeynep Kaya", "phone": "+90 555 000 0000",
                 "lead_status": {"id": 1, "name": "Yeni"}, "assigned_admin_id": 5},
        "assignment": {
            "new_admin": new_admin,
            "old_admin": {"id": 3, "name": "Mehmet Demir"},
            "assigned_by": {"id": 1, "name": "Süper Admin"},
            "timestamp": "2026-11-25T10:00:00.000000Z",
            "type": "reassignment",
        },
        "notification": {"title": "Lead Ataması Değişti", "message": message,
                         "type": "assignment", "priority": "normal"},
    }


class MessageTemplate:
    """The message as two constant halves around ``sent_ns``: one concatenation per event."""

    def __init__(self, event: str = EVENT, size: int = MESSAGE_BYTES) -> None:
        stamp = time.monotonic_ns()
        sentinel = int("9" * len(str(stamp)))  # same digit count as the stamps of this run
        text = self._fit(event, sentinel, size)
        body = self._render(event, sentinel, text)
        head, tail = body.split(str(sentinel))
        self.head, self.tail = head, tail
        self.size = len(body.encode())

    @staticmethod
    def _render(event: str, sent_ns: int, text: str) -> str:
        data = lead_assigned_data(text)
        data["sent_ns"] = sent_ns
        data["socket"] = None
        return laravel_json({"event": event, "data": data, "socket": None})

    @classmethod
    def _fit(cls, event: str, sentinel: int, size: int) -> str:
        """The notification text that makes the whole message ``size`` bytes."""
        text = ""
        for char in _NOTIFICATION_TEXT:
            if len(cls._render(event, sentinel, text + char)) > size:
                break
            text += char
        while len(cls._render(event, sentinel, text)) < size:
            text += "."
        if len(cls._render(event, sentinel, text)) != size:
            raise ValueError(f"cannot make a {event} message of exactly {size} bytes")
        return text

    def render(self, sent_ns: int) -> str:
        return f"{self.head}{sent_ns}{self.tail}"


def ready_message() -> str:
    return laravel_json({"event": READY_EVENT, "data": {"socket": None}, "socket": None})


def channel_names(channel: str | None, template: str | None, count: int) -> list[str]:
    if template:
        return [template.replace("{i}", str(i)) for i in range(count)]
    return [channel or "bench"]


def publish_ready(client: redis.Redis, prefix: str, channels: list[str]) -> None:
    """One ``bench.ready`` event per channel (not counted, not timed): are they subscribed?"""
    body = ready_message()
    pipe = client.pipeline(transaction=False)
    for index, channel in enumerate(channels, 1):
        pipe.publish(prefix + channel, body)
        if index % 500 == 0:
            pipe.execute()
    pipe.execute()


def publish(client: redis.Redis, prefix: str, channels: list[str], count: int, rate: float,
            batch: int = 100, event: str = EVENT) -> dict[str, Any]:
    """``count`` events round-robin over ``channels``; ``rate`` events/s, 0 = pipelined flat out."""
    template = MessageTemplate(event)
    keys = [prefix + channel for channel in channels]
    per_channel = [0] * len(channels)
    zero = 0
    max_lag = 0.0
    started = time.monotonic()
    if rate <= 0:
        sent = 0
        while sent < count:
            pipe = client.pipeline(transaction=False)
            end = min(count, sent + batch)
            stamp = time.monotonic_ns()
            for seq in range(sent, end):
                slot = seq % len(keys)
                pipe.publish(keys[slot], template.render(stamp))
                per_channel[slot] += 1
            zero += sum(1 for receivers in pipe.execute() if receivers == 0)
            sent = end
    else:
        interval = 1.0 / rate
        for seq in range(count):
            due = started + seq * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                max_lag = max(max_lag, now - due)
            slot = seq % len(keys)
            if client.publish(keys[slot], template.render(time.monotonic_ns())) == 0:
                zero += 1
            per_channel[slot] += 1
    seconds = time.monotonic() - started
    return {
        "published": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else None,
        "per_channel": dict(zip(channels, per_channel, strict=True)),
        "zero_receivers": zero,
        "message_bytes": template.size,
        "max_lag_ms": max_lag * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="laravel_database_")
    parser.add_argument("--channel", default="bench")
    parser.add_argument("--channel-template", help="e.g. 'bench.{i}', with --channel-count")
    parser.add_argument("--channel-count", type=int, default=1)
    parser.add_argument("--count", type=int, help="events in all (default rate × duration)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = flat out")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, with --rate")
    parser.add_argument("--batch", type=int, default=100, help="pipeline depth when flat out")
    parser.add_argument("--event", default=EVENT)
    parser.add_argument("--print-message", action="store_true", help="show one message, exit")
    args = parser.parse_args(argv)
    if args.print_message:
        template = MessageTemplate(args.event)
        print(template.render(time.monotonic_ns()))
        print(f"{template.size} bytes", file=sys.stderr)
        return 0
    count = args.count if args.count is not None else int(args.rate * args.duration)
    channels = channel_names(args.channel, args.channel_template, args.channel_count)
    client = redis.Redis.from_url(args.redis_url)
    try:
        result = publish(client, args.prefix, channels, count, args.rate, args.batch,
                         args.event)
    finally:
        client.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
