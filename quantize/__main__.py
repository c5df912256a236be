"""`python -m quantize SOURCE --out DIR [...]` (or `python -m quantize quantize ...`)."""

import sys

from quantize.cli import main

sys.exit(main())
