"""The bodies of the entry scripts (jobs/*.py stay thin: parse arguments, call one of these)."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def format_prepare_summary(manifest: dict[str, Any]) -> str:
    lines = manifest["lines"]
    out = [
        f"prepared {manifest['format']} corpus in {manifest['seconds']:.1f}s",
        f"  lines read        {lines['read']:>12,}",
        f"  parsed            {lines['parsed']:>12,}",
        f"  quarantined       {lines['quarantined']:>12,}"
        + (f"  ({', '.join(f'{k}: {v}' for k, v in lines['quarantined_by_reason'].items())})"
           if lines["quarantined"] else ""),
        f"  templates         {manifest['templates']:>12,}",
        f"  bags              {manifest['bags']['total']:>12,}",
    ]
    for split, c in sorted(manifest["bags"]["by_split"].items()):
        out.append(f"    {split:<6} positive {c['positive']:>8,}  negative {c['negative']:>8,}"
                   + (f"  unlabelled {c['unlabelled']:,}" if c["unlabelled"] else ""))
    if lines.get("without_session"):
        out.append(f"  lines without a session key (not bagged): {lines['without_session']:,}")
    return "\n".join(out)


def prepare_main(args: argparse.Namespace) -> int:
    from .config import load_project
    from .pipeline import prepare
    from .synthetic import SyntheticConfig, generate

    overrides = list(args.overrides)
    if args.smoke_test:
        tmp = Path(tempfile.mkdtemp(prefix="logmilp-smoke-"))
        generate(SyntheticConfig(num_lines=20_000, seed=0), tmp / "corpus")
        overrides += [f"data.inputs=[{tmp / 'corpus' / 'corpus.log'}]", f"data.output_dir={tmp / 'prepared'}",
                      "data.format=bgl", "data.labels.source=lines"]
    cfg = load_project(args.config, overrides)      # every config error surfaces here, before Ray starts
    manifest = prepare(cfg.data)
    print(format_prepare_summary(manifest))
    print(f"outputs: {cfg.data.output_dir}")
    return 0
