"""`python -m twosamplers` = the `twosamplers` command."""

import sys

from .cli import main

sys.exit(main())
