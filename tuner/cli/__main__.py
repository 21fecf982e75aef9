"""``python -m tuner.cli``: the same command line as ``tuner``."""

import sys

from tuner.cli import main

sys.exit(main())
