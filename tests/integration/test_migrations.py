"""Migrations apply to an empty database, downgrade cleanly and apply again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from shared.db.migrate import alembic_config, upgrade
from tests.support.infra import database_url, drop_database


async def _tables(name: str) -> set[str]:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_upgrade_downgrade_upgrade() -> None:
    name = f"vsp_migrate_{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    try:
        upgrade(url)
        assert {
            "videos",
            "renditions",
            "transcode_jobs",
            "uploads",
            "redirector_config",
            "users",
            "api_keys",
        } <= asyncio.run(_tables(name))
        command.downgrade(alembic_config(url), "base")
        assert asyncio.run(_tables(name)) == {"alembic_version"}
        upgrade(url)
        assert "videos" in asyncio.run(_tables(name))
    finally:
        asyncio.run(drop_database(name))
