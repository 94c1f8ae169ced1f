"""``python -m tracestitch.demo`` (what ``make demo`` runs): the three-service demo."""

import sys

from tracestitch.demo import main

sys.exit(main())
