"""One Redis subscriber per process, fanned out to every listener in it.

A process holds a single pub/sub connection however many listeners (server-sent-events streams)
it serves. A channel is subscribed while at least one listener wants it. Each listener has a
bounded queue: one that falls a whole queue behind is dropped (its stream ends and the client
reconnects) rather than buffered without end.

A listener is handed out once Redis has confirmed its channel, so a state read after that
misses no later message. When the connection is lost the subscriber reconnects with backoff
and subscribes again; what was published meanwhile is gone, so each listener then receives
``Signal.RESYNC`` and should read the state afresh.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared.core.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class Signal(enum.Enum):
    """What a listener receives besides messages."""

    RESYNC = "resync"  # subscribed again after an outage: read the state afresh
    DROPPED = "dropped"  # internal: the listener was let go


class Dropped(Exception):
    """The listener fell a whole queue behind and was let go."""


class Listener:
    """One consumer of one channel: messages (bytes) in order, or ``Signal.RESYNC``."""

    def __init__(self, channel: str, queue_messages: int) -> None:
        self.channel = channel
        self.subscribed = asyncio.Event()
        self._queue: asyncio.Queue[bytes | Signal] = asyncio.Queue(queue_messages)
        self.dropped = False

    async def get(self) -> bytes | Signal:
        """The next message or ``Signal.RESYNC``; raises ``Dropped`` once the listener is let go."""
        item = await self._queue.get()
        if item is Signal.DROPPED:
            raise Dropped(f"a listener of {self.channel} fell behind")
        return item

    def deliver(self, item: bytes | Signal) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(Signal.DROPPED)
            log.warning("dropped a listener of %s: it fell a whole queue behind", self.channel)


class PubSubHub:
    """The process's subscriber: ``subscribe`` a listener, ``unsubscribe`` it when done."""

    def __init__(
        self,
        redis: Redis,
        *,
        queue_messages: int = 64,
        confirm_timeout_seconds: float = 5,
        poll_seconds: float = 5,
        backoff_cap_seconds: float = 5,
    ) -> None:
        self.redis = redis
        self.queue_messages = queue_messages
        self.confirm_timeout_seconds = confirm_timeout_seconds
        self.poll_seconds = poll_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._listeners: dict[str, set[Listener]] = {}
        # SUBSCRIBE commands sent on the current connection and not yet confirmed, per channel.
        self._pending: dict[str, int] = {}
        self._active: set[str] = set()  # confirmed, with no SUBSCRIBE pending
        self._pubsub: PubSub = redis.pubsub()
        self._broken = False
        self._lock = asyncio.Lock()  # one command or reconnection at a time
        self._reader: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()

    async def subscribe(self, channel: str) -> Listener:
        """A listener of ``channel``, returned once Redis has confirmed the subscription."""
        listener = Listener(channel, self.queue_messages)
        listeners = self._listeners.setdefault(channel, set())
        first = not listeners
        listeners.add(listener)
        try:
            async with asyncio.timeout(self.confirm_timeout_seconds):
                if first:
                    await self._send_subscribe(channel)
                elif channel in self._active:
                    listener.subscribed.set()
                self._start_reader()
                await listener.subscribed.wait()
        except TimeoutError:
            self.unsubscribe(listener)
            raise ServiceUnavailable("live progress is unavailable right now") from None
        except BaseException:
            self.unsubscribe(listener)
            raise
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        """Forget ``listener``; the channel is unsubscribed when it was the last one.

        Not a coroutine: a cancelled stream's cleanup cannot await, so the command is sent by a
        task of its own.
        """
        listeners = self._listeners.get(listener.channel)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[listener.channel]
            task = asyncio.get_running_loop().create_task(self._send_unsubscribe(listener.channel))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def close(self) -> None:
        """Stop reading and close the connection."""
        tasks = [t for t in (self._reader, *self._chores) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _send_subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._listeners and not self._broken:
                # Counted first: the confirmation may be read before the send returns.
                self._pending[channel] = self._pending.get(channel, 0) + 1
                try:
                    await self._pubsub.subscribe(channel)
                except (RedisError, OSError) as exc:
                    self._lost(exc)

    def _start_reader(self) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _send_unsubscribe(self, channel: str) -> None:
        async with self._lock:
            # Someone may have wanted the channel again since.
            if channel in self._listeners or self._broken:
                return
            self._active.discard(channel)
            try:
                await self._pubsub.unsubscribe(channel)
            except (RedisError, OSError) as exc:
                self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        if not self._broken:
            log.warning("Redis subscriber lost its connection: %s: %s", type(exc).__name__, exc)
        self._broken = True

    async def _reconnect(self) -> None:
        """A new connection subscribed to every wanted channel."""
        async with self._lock:
            old, self._pubsub = self._pubsub, self.redis.pubsub()
            self._pending.clear()
            self._active.clear()
            try:
                await old.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                pass
            await self._pubsub.connect()  # type: ignore[no-untyped-call]
            channels = list(self._listeners)
            for channel in channels:
                self._pending[channel] = 1
            if channels:
                await self._pubsub.subscribe(*channels)
            self._broken = False
        log.info("Redis subscriber connected (%d channels)", len(channels))

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                if self._broken or self._pubsub.connection is None:
                    await self._reconnect()
                message = await self._pubsub.get_message(timeout=self.poll_seconds)
            except Exception as exc:  # the reader must outlive anything Redis does
                if not isinstance(exc, RedisError | OSError):
                    log.exception("Redis subscriber failed unexpectedly")
                self._lost(exc)
                failures += 1
                await asyncio.sleep(min(self.backoff_cap_seconds, 0.1 * 2**failures))
                continue
            failures = 0
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return
        listeners = self._listeners.get(channel, set())
        if kind == "message":
            for listener in listeners:
                if listener.subscribed.is_set():
                    listener.deliver(message["data"])
        elif kind == "subscribe":
            left = max(0, self._pending.get(channel, 0) - 1)
            self._pending[channel] = left
            if left or channel not in self._listeners:
                return
            self._active.add(channel)
            for listener in listeners:
                if listener.subscribed.is_set():
                    # Subscribed again after a reconnection: messages may have been missed.
                    listener.deliver(Signal.RESYNC)
                else:
                    listener.subscribed.set()
