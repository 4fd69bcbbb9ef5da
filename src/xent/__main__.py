"""``python -m xent``: the ``xent`` command line (see :mod:`xent._cli.main`)."""

import sys

from xent._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
