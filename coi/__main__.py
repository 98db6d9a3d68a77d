"""`python -m coi` runs the command line."""

import sys

from coi.commands.cli import main

sys.exit(main())
