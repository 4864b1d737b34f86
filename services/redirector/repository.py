"""SQL for the redirector's one-row configuration table."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.redirector.schemas import RedirectConfig
from shared.db.models import RedirectorConfig

CHANNEL = "redirector_config"
ROW_ID = 1


def to_config(row: RedirectorConfig) -> RedirectConfig:
    return RedirectConfig(
        cdn_host=row.cdn_host,
        ratio=row.ratio,
        status_code=row.status_code,
        sticky=row.sticky,
        version=row.version,
        source="database",
    )


def notification(config: RedirectConfig) -> str:
    """The NOTIFY payload: the whole configuration, so listeners need not read it back."""
    return json.dumps(
        {
            "cdn_host": config.cdn_host,
            "ratio": config.ratio,
            "status_code": config.status_code,
            "sticky": config.sticky,
            "version": config.version,
        }
    )


def from_notification(payload: str) -> RedirectConfig:
    """Parse a NOTIFY payload; ValueError or KeyError when it is not one."""
    data = json.loads(payload)
    return RedirectConfig(
        cdn_host=str(data["cdn_host"]),
        ratio=int(data["ratio"]),
        status_code=int(data["status_code"]),
        sticky=bool(data["sticky"]),
        version=int(data["version"]),
        source="database",
    )


class RedirectorConfigRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self) -> RedirectConfig | None:
        """The stored configuration, or None when the table is empty."""
        row = await self.session.get(RedirectorConfig, ROW_ID)
        return None if row is None else to_config(row)

    async def save(self, changes: dict[str, Any], base: RedirectConfig) -> RedirectConfig:
        """Apply ``changes`` to the stored row (or to ``base`` when there is none), bump its
        version and notify every listener when the transaction commits."""
        # Writes are rare; one lock keeps two first writers from both inserting version 1.
        await self.session.execute(
            text(f"LOCK TABLE {RedirectorConfig.__tablename__} IN SHARE ROW EXCLUSIVE MODE")
        )
        row = await self.session.scalar(
            select(RedirectorConfig).where(RedirectorConfig.id == ROW_ID)
        )
        if row is None:
            row = RedirectorConfig(
                id=ROW_ID,
                cdn_host=base.cdn_host,
                ratio=base.ratio,
                status_code=base.status_code,
                sticky=base.sticky,
                version=0,
            )
            self.session.add(row)
        for name, value in changes.items():
            setattr(row, name, value)
        row.version += 1
        await self.session.flush()
        config = to_config(row)
        await self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": notification(config)},
        )
        return config

    async def clear(self) -> None:
        """Empty the table, so every instance falls back to its environment."""
        await self.session.execute(text(f"DELETE FROM {RedirectorConfig.__tablename__}"))
        await self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": "{}"}
        )
