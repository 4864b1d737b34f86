"""Every Locust user class; pick one with `locust -f load_tests/locustfile.py Viewer`."""

from load_tests.users import RedirectStorm, StreamUploader, TusUploader, Viewer

__all__ = ["RedirectStorm", "StreamUploader", "TusUploader", "Viewer"]
