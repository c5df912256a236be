"""`python -m embedserve.quantize SOURCE --out DIR [...]` (or `python -m embedserve.quantize quantize ...`)."""

import sys

from embedserve.quantize.cli import main

sys.exit(main())
