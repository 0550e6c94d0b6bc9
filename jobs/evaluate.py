"""Evaluate LogMILP: bag-level detection and line-level localization, as in the paper's Tables I–III.

    python jobs/evaluate.py --config configs/synthetic.yaml                 # train eval.seeds, then evaluate
    python jobs/evaluate.py --config configs/synthetic.yaml --bundle DIR    # evaluate existing bundle(s)
    python jobs/evaluate.py --config configs/synthetic.yaml --ablation      # also fill Table III
    python jobs/evaluate.py --config configs/synthetic.yaml --ablation "w/o L_inst,mask"   # some of its rows
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ray_logmilp.cli.common import job_parser, project_config, run_job
    from ray_logmilp.cli.evaluate import evaluate_main

    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", default=[],
                        help="a model bundle to evaluate (repeat for several seeds); default: train eval.seeds")
    parser.add_argument("--ablation", nargs="?", const="all", default=None, metavar="ROW[,ROW]",
                        help="train and evaluate ablation rows of configs/ablations.yaml too (Table III): "
                             "all rows, or the rows named (a name or a unique prefix, comma-separated)")
    parser.add_argument("--report-dir", default=None, help="where metrics.json, report.md and PNGs go "
                        "(default: <train.bundle_dir>/report)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny corpus, one seed, 2 epochs")
    return run_job(evaluate_main, parser, argv, resolve=project_config)


if __name__ == "__main__":
    sys.exit(main())
