"""``python -m hlsinf.build``: see :mod:`hlsinf.build.cli`."""

import sys

from hlsinf.build.cli import main

sys.exit(main())
