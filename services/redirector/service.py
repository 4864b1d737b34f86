"""Use cases: keep the in-memory configuration fresh, change it, answer redirects.

The configuration is read from PostgreSQL at start, on every NOTIFY and every
``redirector_resync_seconds``; a redirect only ever reads the in-memory copy. When the table is
empty the environment's configuration applies; when the database is unreachable the last
configuration read stays in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.redirector import metrics
from services.redirector.decision import HostPatterns, RatioSplit, Redirect
from services.redirector.repository import CHANNEL, RedirectorConfigRepository, from_notification
from services.redirector.schemas import ConfigUpdate, ConfigView, RedirectConfig
from services.redirector.settings import Settings
from shared.core.errors import UpstreamUnavailable
from shared.core.tasks import cancel_and_wait
from shared.db.engine import Database

log = logging.getLogger(__name__)

DB_TIMEOUT_SECONDS = 3.0
DB_ERRORS = (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError)


def env_config(settings: Settings) -> RedirectConfig:
    """The fallback configuration from the environment (.env)."""
    return RedirectConfig(
        cdn_host=settings.redirector_cdn_host,
        ratio=settings.redirector_ratio,
        status_code=settings.redirector_status_code,
        sticky=settings.redirector_sticky,
    )


def listen_dsn(database_url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Redirector:
    """One instance's state: the balancer and the configuration store feeding it."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db
        self.fallback = env_config(settings)
        self.balancer = RatioSplit(
            self.fallback,
            HostPatterns(settings.redirector_origin_hosts),
            max_url_bytes=settings.redirector_max_url_bytes,
            permanent_max_age_seconds=settings.redirector_permanent_max_age_seconds,
            cdn_target=settings.redirector_cdn_target,
        )
        self.applied_at = time.time()
        self._publish(self.fallback)
        self._task: asyncio.Task[None] | None = None
        self._listener_ready = asyncio.Event()
        self._pending: set[asyncio.Task[RedirectConfig]] = set()

    @property
    def config(self) -> RedirectConfig:
        return self.balancer.config

    def view(self) -> ConfigView:
        config = self.config
        return ConfigView(
            cdn_host=config.cdn_host,
            ratio=config.ratio,
            status_code=config.status_code,
            sticky=config.sticky,
            version=config.version,
            source=config.source,
            cdn_target=self.balancer.cdn_target,
            instance=self.settings.redirector_instance_id,
            applied_at=self.applied_at,
        )

    def redirect(self, video: str | None, viewer: str | None = None) -> Redirect:
        """The redirect for one request (no I/O)."""
        try:
            answer = self.balancer.redirect(video, viewer)
        except Exception as exc:
            metrics.REJECTED.labels(getattr(exc, "code", "internal_error")).inc()
            raise
        metrics.REDIRECTS.values[
            metrics.TO_ORIGIN if answer.side == "origin" else metrics.TO_CDN
        ] += 1
        return answer

    async def start(self) -> None:
        """Read the stored configuration, then follow its changes in the background."""
        await self.reload()
        if self.db is not None:
            self._task = asyncio.create_task(self._follow(), name="redirector-config")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def reload(self) -> RedirectConfig:
        """Read the configuration; keep the current one when the database does not answer."""
        if self.db is None:
            return self.config
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS), self.db.session() as session:
                stored = await RedirectorConfigRepository(session).get()
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels("error").inc()
            log.warning("configuration not read, keeping version %s: %r", self.config.version, exc)
            return self.config
        metrics.CONFIG_RELOADS.labels("ok").inc()
        fresh = stored or self.fallback
        current = self.config
        if fresh.source != current.source or fresh.version >= current.version:
            self._apply(fresh)
        return self.config

    async def update(self, changes: ConfigUpdate) -> RedirectConfig:
        """Store a change, use it here at once; other instances get it by NOTIFY."""
        db = self._need_db()
        fields: dict[str, Any] = changes.model_dump(exclude_none=True)
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS), db.session() as session:
                saved = await RedirectorConfigRepository(session).save(fields, self.fallback)
        except DB_ERRORS as exc:
            raise UpstreamUnavailable(f"the configuration database is unavailable: {exc}") from None
        self._apply_newer(saved)
        return self.config

    async def reset(self) -> RedirectConfig:
        """Empty the stored configuration, so every instance uses its environment's."""
        db = self._need_db()
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS), db.session() as session:
                await RedirectorConfigRepository(session).clear()
        except DB_ERRORS as exc:
            raise UpstreamUnavailable(f"the configuration database is unavailable: {exc}") from None
        self._apply(self.fallback)
        return self.config

    def _need_db(self) -> Database:
        if self.db is None:
            raise UpstreamUnavailable("this instance has no configuration database")
        return self.db

    def _apply_newer(self, config: RedirectConfig) -> None:
        current = self.config
        if current.source == "environment" or config.version > current.version:
            self._apply(config)

    def _apply(self, config: RedirectConfig) -> None:
        if config != self.config:
            self.applied_at = time.time()
            log.info(
                "configuration version %s from the %s: cdn_host=%s ratio=%s status=%s sticky=%s",
                config.version,
                config.source,
                config.cdn_host,
                config.ratio,
                config.status_code,
                config.sticky,
            )
        self.balancer.apply(config)
        self._publish(config)

    @staticmethod
    def _publish(config: RedirectConfig) -> None:
        metrics.CONFIG_VERSION.set(config.version)
        metrics.CONFIG_RATIO.set(config.ratio)
        metrics.CONFIG_FROM_DATABASE.set(1 if config.source == "database" else 0)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            config = from_notification(payload)
        except (ValueError, KeyError, TypeError):
            # Not a full configuration (the table was emptied): read what is there now.
            task = asyncio.get_running_loop().create_task(self.reload())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        self._apply_newer(config)

    async def _follow(self) -> None:
        """LISTEN for changes; reconnect after failures and re-read whatever was missed."""
        dsn = listen_dsn(self.settings.database_url)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=DB_TIMEOUT_SECONDS)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                metrics.LISTENER_UP.set(1)
                self._listener_ready.set()
                # Whatever changed while nobody was listening.
                await self.reload()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.settings.redirector_resync_seconds)
                    if not lost.is_set():
                        # A silently dropped connection only shows when it is used.
                        await asyncio.wait_for(conn.execute("SELECT 1"), DB_TIMEOUT_SECONDS)
                        await self.reload()
                log.warning("configuration listener lost its connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("configuration listener cannot connect: %r", exc)
            finally:
                metrics.LISTENER_UP.set(0)
                self._listener_ready.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 1)
            await asyncio.sleep(self.settings.redirector_reconnect_seconds)

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is open right now."""
        return self._listener_ready.is_set()
