"""``python -m finestep``: the ``finestep`` command line."""

import sys

from finestep.cli import main

sys.exit(main())
