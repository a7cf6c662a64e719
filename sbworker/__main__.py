"""`python -m sbworker` is the `sbworker` command."""

import sys

from sbworker.cli import main

sys.exit(main())
