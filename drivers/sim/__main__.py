"""`python -m drivers.sim`: the `lockgw-sim` command line."""

import sys

from drivers.sim.cli import main

sys.exit(main())
