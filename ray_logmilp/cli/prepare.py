"""The prepare job's body (``jobs/prepare.py``) and the prepare summary every job that prepares prints."""

from __future__ import annotations

import argparse
from typing import Any

from ray_logmilp.cli.smoke import with_smoke_corpus


def format_prepare_summary(manifest: dict[str, Any]) -> str:
    """The prepare manifest as a short table: lines read, parsed and quarantined, templates, bags per split."""
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
    skipped = manifest.get("inputs_skipped") or {}
    if skipped.get("symlink_loops") or skipped.get("broken_links") or skipped.get("duplicates"):
        out.append(f"  inputs skipped: {len(skipped.get('symlink_loops') or [])} symlink loop(s), "
                   f"{len(skipped.get('broken_links') or [])} dangling link(s), "
                   f"{skipped.get('duplicates') or 0} file(s) named more than once (read once)")
    return "\n".join(out)


def prepare_and_print(cfg) -> dict[str, Any]:
    """Run the prepare stage of ``cfg`` (a ProjectConfig) and print its summary; returns the manifest."""
    from ray_logmilp.ingest.pipeline import prepare

    manifest = prepare(cfg.data)
    print(format_prepare_summary(manifest))
    return manifest


def prepare_main(args: argparse.Namespace) -> int:
    from ray_logmilp.config import load_project

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = with_smoke_corpus(overrides)
    cfg = load_project(args.config, overrides)      # every config error surfaces here, before Ray starts
    prepare_and_print(cfg)
    print(f"outputs: {cfg.data.output_dir}")
    return 0
