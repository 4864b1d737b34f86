"""Helpers for the upload tests: tus client processes (tuspy, tus-js-client) and media files."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

NODE_DIR = ROOT / "tests" / "node"
MIB = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def padded_media(clip: Path, dest: Path, total_bytes: int, *, random: bool = True) -> Path:
    """``clip`` (an MP4) then an MP4 ``free`` box, ``total_bytes`` in all: still valid media."""
    if dest.exists() and dest.stat().st_size == total_bytes:
        return dest
    head = clip.read_bytes()
    pad = total_bytes - len(head)
    if pad < 8 or pad >= 2**32:
        raise ValueError("padding must fit one 32-bit MP4 box")
    with dest.open("wb") as out:
        out.write(head)
        out.write(struct.pack(">I4s", pad, b"free"))
        left = pad - 8
        block = os.urandom(MIB) if random else bytes(MIB)
        while left > 0:
            out.write(block[: min(left, MIB)])
            left -= MIB
    return dest


def ensure_node_clients() -> Path:
    """tus-js-client installed under tests/node (``npm ci`` from the lock file if missing)."""
    if not (NODE_DIR / "node_modules" / "tus-js-client").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed for the tus-js-client tests")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return NODE_DIR


def _tuspy_main(argv: list[str]) -> None:
    """Upload with tuspy chunk by chunk; optionally SIGKILL itself after some bytes."""
    from tusclient import client
    from tusclient.storage.filestorage import FileStorage

    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("store")
    parser.add_argument("--chunk", type=int, default=MIB)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args(argv)
    uploader = client.TusClient(args.endpoint).uploader(
        args.file,
        chunk_size=args.chunk,
        metadata={"filename": Path(args.file).name, "title": "tuspy upload"},
        store_url=True,
        url_storage=FileStorage(args.store),
    )
    print(f"start {uploader.offset} {uploader.url}", flush=True)
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        print(f"offset {uploader.offset}", flush=True)
        if args.die_after and uploader.offset >= args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
    print(f"done {uploader.url}", flush=True)


if __name__ == "__main__":
    _tuspy_main(sys.argv[1:])
