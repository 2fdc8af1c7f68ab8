"""`python -m herald_notify_apprise`: the same as the `herald-notify-apprise` console script."""

import sys

from .plugin import main

sys.exit(main())
