"""``python -m ray_logmilp.synthetic``: write a synthetic corpus with ground truth."""
import sys

from ray_logmilp.synthetic.generator import main

sys.exit(main())
