"""One delivery loop per endpoint: sign, POST, and on failure wait and try the same batch
again, until the endpoint answers 2xx or the batch's retry time runs out (then it is
dropped, counted and logged with its id). A slow or dead receiver holds back only its own
endpoint's queue; nothing here runs on the fan-out's path."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import aiohttp

from echo_common.signing import sign

from .queue import Batch, MemoryQueue, RedisQueue
from .settings import DeliverySettings, Endpoint

log = logging.getLogger("echo_server.webhooks")

USER_AGENT = "echo-server webhooks"
RESERVED_HEADERS = frozenset({"content-type", "user-agent", "x-pusher-key", "x-pusher-signature",
                              "x-webhook-id", "content-length", "host"})


@dataclass(slots=True)
class WebhookStats:
    sent: int = 0  # batches a receiver took
    failed: int = 0  # attempts that did not get a 2xx in time
    retried: int = 0  # attempts after a failure
    dropped_batches: int = 0  # given up after retryForMs
    dropped_events: int = 0  # in those batches, and refused by a full queue
    delivery_seconds: float = 0.0  # summed over the batches sent (their last attempt)


class Sender:
    def __init__(self, endpoint: Endpoint, queue: MemoryQueue | RedisQueue,
                 settings: DeliverySettings, session: aiohttp.ClientSession,
                 stats: WebhookStats) -> None:
        self.endpoint = endpoint
        self.queue = queue
        self.settings = settings
        self.session = session
        self.stats = stats
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                batch = await self.queue.claim()
            except Exception as exc:  # Redis away: the events wait there (or in memory)
                log.warning("webhooks for %s: queue unreachable (%s)", self.endpoint.url, exc)
                batch = None
            if batch is None:
                await asyncio.sleep(self.settings.poll)
                continue
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhooks for %s: %s", self.endpoint.url, exc)
                await asyncio.sleep(self.settings.poll)

    async def _deliver(self, batch: Batch) -> None:
        endpoint, settings, stats = self.endpoint, self.settings, self.stats
        if batch.attempts:
            stats.retried += 1
        started = time.monotonic()
        problem = await self._post(batch)
        if problem is None:
            stats.sent += 1
            stats.delivery_seconds += time.monotonic() - started
            await self.queue.ack(batch)
            return
        stats.failed += 1
        if time.time() * 1000 - batch.first_try_ms >= settings.retry_for * 1000:
            stats.dropped_batches += 1
            stats.dropped_events += batch.events
            log.error("webhook batch %s to %s dropped after %d attempts over %.0f s (%d "
                      "events): %s", batch.id, endpoint.url, batch.attempts + 1,
                      settings.retry_for, batch.events, problem)
            await self.queue.ack(batch)
            return
        delay = min(settings.retry_max, settings.retry_base * 2 ** batch.attempts)
        delay *= 0.5 + random.random()  # jitter: many instances never retry in step
        if batch.attempts == 0:
            log.warning("webhook batch %s to %s failed (%s); retrying with backoff",
                        batch.id, endpoint.url, problem)
        await self.queue.defer(batch, delay)

    async def _post(self, batch: Batch) -> str | None:
        """None when the receiver took it; else why not."""
        endpoint = self.endpoint
        headers = {name: value for name, value in endpoint.headers
                   if name.lower() not in RESERVED_HEADERS}  # ours win, whatever the case
        headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT,
                        "X-Pusher-Key": endpoint.key,
                        # Pusher's: the HMAC of the raw body with the app's secret.
                        "X-Pusher-Signature": sign(endpoint.secret, batch.body),
                        "X-Webhook-Id": batch.id})
        try:
            async with self.session.post(
                    endpoint.url, data=batch.body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.settings.timeout)) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
