"""``python -m load_tests.chaos``: see ``load_tests.chaos.run``."""

import sys

from load_tests.chaos.run import main

sys.exit(main())
