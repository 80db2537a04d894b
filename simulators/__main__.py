"""Entry point: `python -m simulators serve|config ...` (see simulators.cli)."""

import sys

from .cli import main

sys.exit(main())
