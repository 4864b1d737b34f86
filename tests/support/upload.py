"""tus clients for the upload tests: tus-js-client (under tests/node) and tuspy.

``python -m tests.support.upload ENDPOINT FILE STORE`` uploads with tuspy chunk by chunk, as a
process of its own that a test may watch die half-way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.media import MIB
from tests.support.paths import ROOT

NODE_DIR = ROOT / "tests" / "node"


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
