"""`python -m divspa ...` is the `divspa` command (for environments without its console script)."""

import sys

from divspa.cli import main

sys.exit(main())
