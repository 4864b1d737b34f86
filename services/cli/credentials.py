"""Where the CLI finds its credential: ``--api-key`` / ``VSP_API_KEY``, else the stored login.

``vsp login`` keeps the origin's access token in ``~/.config/vsp/login.json``, readable by its
owner alone (0600, in a 0700 folder), until it expires or ``vsp logout`` removes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def login_file() -> Path:
    return Path.home() / ".config" / "vsp" / "login.json"


def save_login(origin_url: str, name: str, access_token: str, expires_in: int) -> Path:
    """Store a fresh access token, owner-readable only; returns the file."""
    path = login_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {
        "origin_url": origin_url,
        "name": name,
        "access_token": access_token,
        "expires_at": int(time.time()) + expires_in,
    }
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    tmp.replace(path)
    return path


def stored_login() -> dict[str, Any] | None:
    """The stored login while its token is valid, else None."""
    try:
        record: dict[str, Any] = json.loads(login_file().read_text())
    except (OSError, ValueError):
        return None
    if int(record.get("expires_at", 0)) <= time.time():
        return None
    return record


def forget_login() -> bool:
    """Remove the stored login; whether there was one."""
    try:
        login_file().unlink()
    except FileNotFoundError:
        return False
    return True


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header of the API key, else of the stored login, else none."""
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    login = stored_login()
    if login is not None:
        return {"Authorization": f"Bearer {login['access_token']}"}
    return {}
