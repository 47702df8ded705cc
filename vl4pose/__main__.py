"""``python -m vl4pose``: the same command line as the ``vl4pose`` script."""

import sys

from vl4pose.cli import main

sys.exit(main())
