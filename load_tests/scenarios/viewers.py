"""HLS viewers through the edges: `make load SCENARIO=viewers`."""

from load_tests.users import Viewer

__all__ = ["Viewer"]
