"""``python -m localbus``: same as ``sbworker localbus``."""

import sys

from .cli import main

sys.exit(main())
