"""Shared command-line plumbing for the thin entry scripts in jobs/, tune/ and serve/."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from ray_logmilp.config import ConfigError


def setup_logging(verbose: bool = False) -> None:
    """Handlers live in entry scripts only; the library just logs."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ray_logmilp").setLevel(logging.DEBUG if verbose else logging.INFO)


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides use dotted keys and YAML values, e.g. data.window.size=128 train.epochs=5",
    )
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    return parser


def run_job(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None) -> int:
    """Parse arguments, set up logging, run ``main``; configuration errors exit 2 with the message."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
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
