"""`python -m kubepam` runs the CLI."""

import sys

from kubepam.cli import main

sys.exit(main())
