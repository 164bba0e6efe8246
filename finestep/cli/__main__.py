"""``python -m finestep.cli``: the ``finestep`` command line."""

import sys

from finestep.cli import main

sys.exit(main())
