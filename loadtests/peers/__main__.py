"""`python -m loadtests.peers [--force]`: builds the peers' venvs when missing or stale (see setup.py)."""

import sys

from loadtests.peers.setup import main

sys.exit(main())
