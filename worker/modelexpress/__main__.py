"""`python -m modelexpress` runs the CLI."""

import sys

from modelexpress.cli.main import main

sys.exit(main())
