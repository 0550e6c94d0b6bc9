"""Sweep LogMILP's loss weights and prototype count with Ray Tune (Optuna TPE + ASHA early stopping).

    python tune/sweep.py --config configs/synthetic.yaml --num-samples 32 [train.epochs=10] [space.train.lr=null]
    ray job submit --working-dir . -- python tune/sweep.py --config configs/synthetic.yaml \\
        train.storage_path=/shared/sweeps
    python tune/sweep.py --config configs/synthetic.yaml --name NAME --resume    # finish an interrupted sweep
    python tune/sweep.py --smoke-test                                            # 3 tiny trials
    python tune/sweep.py --config configs/synthetic.yaml --print-config          # resolved config + space

Prints a live table of trials, then the best configuration and where it was written
(<train.storage_path>/<name>/results/best.yaml, which jobs/train.py --config accepts unchanged).
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_SEARCH = Path(__file__).resolve().parents[1] / "configs" / "search" / "default.yaml"


def main(argv=None) -> int:
    from ray_logmilp.cli.common import job_parser, run_job
    from ray_logmilp.cli.sweep import sweep_main

    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--search", default=str(DEFAULT_SEARCH),
                        help="search-space YAML (default: configs/search/default.yaml)")
    parser.add_argument("--num-samples", type=int, help="trials (overrides search.num_samples)")
    parser.add_argument("--seed", type=int, help="seed of the TPE sampler (overrides search.seed)")
    parser.add_argument("--max-concurrent", type=int,
                        help="trials at once (default: what the cluster's resources hold)")
    parser.add_argument("--name", help="sweep name under train.storage_path (default: sweep-<config>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep --name: finished trials are kept, unfinished ones resume")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local Ray)")
    parser.add_argument("--tune-verbose", type=int, default=1, choices=[0, 1, 2],
                        help="Tune's console output: 0 silent, 1 live trial table (default), 2 verbose")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny synthetic corpus, small model, 2 epochs, 3 trials: checks the whole path")
    return run_job(sweep_main, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
