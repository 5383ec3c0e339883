"""`python -m daemon.cli ...` runs the `vlmtrader` command."""

import sys

from daemon.cli import main

sys.exit(main())
