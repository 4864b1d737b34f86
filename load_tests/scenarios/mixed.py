"""Mostly viewers, some redirects, a few uploaders: `make load SCENARIO=mixed`."""

from load_tests.users import RedirectStorm, StreamUploader, TusUploader, Viewer

Viewer.weight = 20
RedirectStorm.weight = 5
StreamUploader.weight = 1
TusUploader.weight = 1

__all__ = ["RedirectStorm", "StreamUploader", "TusUploader", "Viewer"]
