"""`python -m exporter.stack`."""

import sys

from exporter.stack.run import main

sys.exit(main())
