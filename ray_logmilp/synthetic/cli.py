"""``python -m ray_logmilp.synthetic`` (also the ``ray-logmilp-synth`` script): write a synthetic corpus.

The named flags set the common fields; ``--set FIELD=VALUE`` sets any field of :class:`SyntheticConfig`
(values are YAML, as in the jobs' overrides). Both go through the config engine, so a wrong name or
value exits 2 with one line naming the field.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from ray_logmilp.cli.common import run_job
from ray_logmilp.config import ConfigError, apply_overrides, from_dict
from ray_logmilp.synthetic.config import SyntheticConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_logmilp.synthetic",
        description="Write a synthetic BGL-layout log corpus with labelled anomalous lines, alarms.csv, "
                    "episodes.csv and truth.json (see docs/synthetic.md).",
        epilog="Defaults are SyntheticConfig's; --print-config shows every field as it would be used.")
    # Each flag's dest is its SyntheticConfig field; SUPPRESS keeps flags not given out of the namespace,
    # so the dataclass stays the one place that holds the defaults.
    field = dict(default=argparse.SUPPRESS)
    p.add_argument("--out", help="output directory (created if missing)")
    p.add_argument("--lines", dest="n_lines", type=int, help="valid lines to write", **field)
    p.add_argument("--seed", dest="seed", type=int, **field)
    p.add_argument("--templates", dest="n_templates", type=int, help="number of normal background templates",
                   **field)
    p.add_argument("--rate", dest="lines_per_second", type=float, help="ordinary lines per second", **field)
    p.add_argument("--episode-rate", dest="episode_rate", type=float, help="anomaly episodes per 1,000 lines",
                   **field)
    p.add_argument("--burst-rate", dest="burst_rate", type=float, help="distractor bursts per 1,000 lines",
                   **field)
    p.add_argument("--start-time", dest="start_time", type=int, help="epoch seconds", **field)
    p.add_argument("--zipf", dest="zipf_exponent", type=float, help="Zipf exponent", **field)
    p.add_argument("--alarm-pad", dest="alarm_pad_seconds", type=float,
                   help="seconds added around each episode in alarms.csv", **field)
    p.add_argument("--gzip", dest="gzip", action="store_true", help="write corpus.log.gz", **field)
    p.add_argument("--corrupt", dest="corrupt", action="store_true",
                   help="plant bad lines (listed in truth.json)", **field)
    p.add_argument("--template-ids", dest="write_template_ids", action="store_true",
                   help="also write template_ids.i32", **field)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any SyntheticConfig field, e.g. --set kind_weights=1,1,1,0 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit (no corpus is written)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _list_value(item: str) -> str:
    """``kind_weights=1,1,1,0`` -> ``kind_weights=[1,1,1,0]``: no field is a string, so a comma means a list."""
    key, sep, value = item.partition("=")
    if sep and "," in value and not value.lstrip().startswith("["):
        return f"{key}=[{value}]"
    return item


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The config of a command line: SyntheticConfig's defaults, then the named flags, then ``--set``."""
    names = SyntheticConfig.__dataclass_fields__
    data = {name: value for name, value in vars(args).items() if name in names}
    apply_overrides(data, [_list_value(item) for item in args.set])
    return from_dict(SyntheticConfig, data)


def _write(args: argparse.Namespace) -> int:
    from ray_logmilp.synthetic.generator import generate

    if not args.out:
        raise ConfigError("--out: the output directory is required")
    config = synthetic_config(args)
    last = [0.0]
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            el = now - t0
            eta = el / done * (total - done) if done else 0.0
            print(f"\r[synthetic] {done:,}/{total:,} lines ({100 * done / total:.0f}%) "
                  f"{el:.1f}s elapsed, ETA {eta:.1f}s", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)

    show = not args.quiet and config.n_lines >= 200_000
    summary = generate(config, args.out, progress=progress if show else None)
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(_write, _parser(), argv, resolve=synthetic_config)
