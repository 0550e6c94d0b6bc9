"""Ray Serve app: batched HTTP detection + localization of raw log windows with a model bundle.

    serve run serve/config.yaml                                    # local, settings from the YAML
    serve deploy serve/config.yaml                                 # running cluster (see docs/serving.md)
    python serve/app.py --bundle outputs/demo/model [--port 8000]  # same app, YAML defaults, flags on top

The deployment, request/response schemas and the builder live in ``ray_logmilp.serving``; this file is
the ``import_path`` of serve/config.yaml and the script entry point.
"""
import sys
from pathlib import Path

from ray_logmilp.serving.app import AppArgs, build_app, main

__all__ = ["AppArgs", "build_app", "CONFIG"]

#: The Serve config beside this file: its app settings are the script's defaults.
CONFIG = Path(__file__).with_name("config.yaml")

if __name__ == "__main__":
    sys.exit(main(default_config=CONFIG))
