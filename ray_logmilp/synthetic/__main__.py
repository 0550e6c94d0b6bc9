"""``python -m ray_logmilp.synthetic``: write a synthetic corpus with ground truth."""
import sys

from ray_logmilp.synthetic.cli import main

sys.exit(main())
