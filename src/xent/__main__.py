"""``python -m xent``: the ``xent`` command line (see :mod:`xent.cli`)."""

import sys

from xent.cli import main

if __name__ == "__main__":
    sys.exit(main())
