import sys

from must_engine.cli import main

sys.exit(main())
