"""Async engine and session factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.core.settings import BaseServiceSettings


class Database:
    """One engine per process; sessions are short and committed by their owner.

    Every pooled connection is pinged before use, so one that a database restart closed is
    replaced instead of failing the request that draws it.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout_seconds: float = 10,
        pool_recycle_seconds: float = 1800,
        connect_timeout_seconds: float = 5,
    ) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_timeout=pool_timeout_seconds,
            pool_recycle=pool_recycle_seconds,
            connect_args={"timeout": connect_timeout_seconds},
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(
        cls, settings: BaseServiceSettings, *, pool_size: int | None = None
    ) -> Database:
        """The database the settings name, with their pool and timeouts."""
        return cls(
            settings.database_url,
            pool_size=pool_size or settings.database_pool_size,
            pool_timeout_seconds=settings.database_pool_timeout_seconds,
            pool_recycle_seconds=settings.database_pool_recycle_seconds,
            connect_timeout_seconds=settings.database_connect_timeout_seconds,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
