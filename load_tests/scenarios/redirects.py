"""A redirect storm against nginx and the four redirectors: `make load SCENARIO=redirects`."""

from load_tests.users import RedirectStorm

__all__ = ["RedirectStorm"]
