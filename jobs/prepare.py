"""Prepare a log corpus: raw logs -> events, templates, bags (Ray Data).

    python jobs/prepare.py --config configs/bgl.yaml [data.inputs='[path]'] [data.output_dir=DIR]
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/bgl.yaml
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ray_logmilp.cli.common import job_parser, project_config, run_job
    from ray_logmilp.cli.prepare import prepare_main

    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny synthetic corpus, quick run")
    return run_job(prepare_main, parser, argv, resolve=project_config)


if __name__ == "__main__":
    sys.exit(main())
