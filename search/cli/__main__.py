"""``python -m search.cli``: the same command line as ``wemem``."""

import sys

from ._main import main

sys.exit(main())
