"""Ray Serve app: batched HTTP detection + localization of raw log windows with a model bundle.

    serve run serve/config.yaml                                    # local, settings from the YAML
    serve deploy serve/config.yaml                                 # running cluster (see docs/serving.md)
    python serve/app.py --bundle outputs/demo/model [--port 8000]  # same app, YAML defaults, flags on top
    python serve/app.py --print-config [--bundle DIR]              # the resolved app args, Ray not started

The deployment and builder live in ``ray_logmilp.serving.deployment``, the app's settings in
``ray_logmilp.serving.args``; this file is the ``import_path`` of serve/config.yaml and the script entry point.
"""
import sys
from pathlib import Path

from ray_logmilp.serving.deployment import build_app

__all__ = ["build_app", "CONFIG"]

#: The Serve config beside this file: its app settings are the script's defaults.
CONFIG = Path(__file__).with_name("config.yaml")

if __name__ == "__main__":
    from ray_logmilp.serving.cli import main

    sys.exit(main(default_config=CONFIG))
