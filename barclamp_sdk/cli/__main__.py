"""``python -m barclamp_sdk.cli`` runs the ``crowbar`` command."""

import sys

from barclamp_sdk.cli import main

sys.exit(main())
