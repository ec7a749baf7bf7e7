"""`python -m reflex_dspy.cli`: the same as the `reflex-dspy` console script."""

import sys

from reflex_dspy.cli import main

sys.exit(main())
