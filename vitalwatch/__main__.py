"""``python -m vitalwatch`` runs the command line."""

import sys

from vitalwatch.cli import main

sys.exit(main())
