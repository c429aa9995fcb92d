"""``python -m must_gui`` starts the app."""

import sys

from must_gui.app import main

sys.exit(main())
