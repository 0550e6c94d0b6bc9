"""The train job's body (``jobs/train.py``): optional prepare, Ray Train, then the run's history."""

from __future__ import annotations

import argparse

from ray_logmilp.cli.prepare import prepare_and_print
from ray_logmilp.cli.smoke import with_smoke_corpus


def train_main(args: argparse.Namespace) -> int:
    from ray_logmilp.config import load_project
    from ray_logmilp.train import format_progress, train_with_ray
    from ray_logmilp.train.loop import SELECT_SR_WEIGHT

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = with_smoke_corpus(overrides)
    cfg = load_project(args.config, overrides)      # every config error surfaces here, before Ray starts
    if args.prepare or args.smoke_test:
        prepare_and_print(cfg)
    result = train_with_ray(cfg)
    print("history:")
    for row in result.history:
        print("  " + format_progress(row, cfg.train.epochs))
    m = result.metrics
    print(f"trained in {result.seconds:.1f}s; best epoch {m['epoch'] + 1}: val F1 {m['val_f1']:.4f}, "
          f"AUC {m['val_auc']:.4f}, SR {m['val_sr']:.4f}, threshold {m['threshold']:.4f} "
          f"(kept for the highest val F1 + {SELECT_SR_WEIGHT:g}·SR)")
    print(f"model bundle: {result.bundle_dir}")
    return 0
