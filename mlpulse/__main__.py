"""``python -m mlpulse``: the ``mlpulse`` command."""

import sys

from mlpulse.cli import main

sys.exit(main())
