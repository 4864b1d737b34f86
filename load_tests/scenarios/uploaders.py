"""Uploaders, streamed and tus with pause and resume: `make load SCENARIO=uploaders`."""

from load_tests.users import StreamUploader, TusUploader

__all__ = ["StreamUploader", "TusUploader"]
