"""``python -m tracestitch.cli``: the ``tracestitch`` command."""

import sys

from tracestitch.cli import main

sys.exit(main())
