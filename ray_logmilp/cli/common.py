"""Shared command-line plumbing for the thin entry scripts in jobs/, tune/ and serve/.

Importing this module is cheap (no torch, no Ray): an entry script validates its config through
:func:`run_job` before the job body imports anything heavy, so a bad flag fails in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence, TextIO

import yaml

from ray_logmilp.config import ConfigError, to_dict


def setup_logging(verbose: bool = False) -> None:
    """Handlers live in entry scripts only; the library just logs."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ray_logmilp").setLevel(logging.DEBUG if verbose else logging.INFO)


def job_parser(description: str) -> argparse.ArgumentParser:
    """The flags every job shares: ``--config``, ``--verbose``, ``--print-config`` and dotted overrides,
    which :func:`run_job` accepts anywhere among the other flags."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides use dotted keys and YAML values, e.g. data.window.size=128 train.epochs=5",
    )
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, overrides and defaults) as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    return parser


def print_config(config: Any, stream: TextIO | None = None) -> None:
    """Print a resolved config (a dataclass tree or a mapping of them) as YAML, fields in declaration order."""
    yaml.safe_dump(to_dict(config), stream or sys.stdout, sort_keys=False, default_flow_style=False)


def project_config(args: argparse.Namespace) -> Any:
    """The ProjectConfig of a job's command line: the ``--config`` file, its overrides, the defaults."""
    from ray_logmilp.config import load_project

    return load_project(args.config, args.overrides)


def run_job(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None,
            resolve: Callable[[argparse.Namespace], Any] | None = None) -> int:
    """Parse arguments (overrides may come between flags), set up logging, run ``main``.

    ``resolve(args)``, when given, builds the job's config before ``main`` runs, so its errors are reported
    before the body imports Ray or torch; ``--print-config`` prints what it returns and exits 0. A job
    without ``resolve`` (the sweep, which prints two documents) handles ``--print-config`` in ``main``.
    Configuration errors exit 2 with one line.
    """
    args = parser.parse_intermixed_args(argv)
    print_only = getattr(args, "print_config", False)
    if print_only and getattr(args, "smoke_test", False):
        parser.error("--print-config shows the config from --config and overrides; --smoke-test replaces "
                     "its data and model with a tiny corpus, so the two do not combine")
    setup_logging(getattr(args, "verbose", False))
    try:
        if resolve is not None:
            config = resolve(args)
            if print_only:
                print_config(config)
                return 0
        return main(args) or 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except user_errors() as exc:
        # Bad input or a bad invocation: one clear line, no traceback (--verbose shows it).
        if getattr(args, "verbose", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe the user's input, not a bug in ray-logmilp."""
    from ray_logmilp.bundle import BundleError
    from ray_logmilp.ingest.prepared import DataError
    from ray_logmilp.ingest.format_spec import FormatError
    from ray_logmilp.ingest.pipeline import PrepareError
    from ray_logmilp.ingest.sources import InputError
    from ray_logmilp.ingest.windows import WindowError

    return (FormatError, InputError, PrepareError, WindowError, DataError, BundleError)
