"""``python -m src``: the ``exptrain`` command (see ``src/cli/main.py``)."""

import sys

from .cli.main import main

sys.exit(main())
