"""``python -m localdts``: same as ``sbworker dts``."""

import sys

from .cli import main

sys.exit(main())
