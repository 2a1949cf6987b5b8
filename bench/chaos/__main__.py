"""``python -m bench.chaos``: run the chaos run and exit 0 on PASS."""

from __future__ import annotations

import sys

from bench.chaos.cli import main

sys.exit(main())
