"""Train LogMILP on a prepared corpus with Ray Train (DDP on CPU or GPU) and write the model bundle.

    python jobs/train.py --config configs/synthetic.yaml [train.num_workers=2] [train.epochs=20]
    ray job submit --working-dir . -- python jobs/train.py --config configs/synthetic.yaml
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ray_logmilp.cli.common import job_parser, project_config, run_job
    from ray_logmilp.cli.train import train_main

    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny synthetic corpus, 2 epochs, small model: checks the whole path in a minute")
    parser.add_argument("--prepare", action="store_true", help="run the prepare stage first (data section)")
    return run_job(train_main, parser, argv, resolve=project_config)


if __name__ == "__main__":
    sys.exit(main())
