"""``mlpulse elastic-setup``: apply the ELK artefacts to Elasticsearch and Kibana, or show the plan.

    mlpulse elastic-setup [--root .] [--bundle DIR ...]          # environment: see docs/elk.md
    mlpulse elastic-setup --plan [--root .] [--bundle DIR ...]   # the requests, passwords hidden

The artefacts are read from the committed files under ``--root`` (written by ``mlpulse generate
elastic``), or generated in memory from ``--bundle`` directories. ``python -m mlpulse.elastic`` is
the same command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from mlpulse.bundle import BundleError
from mlpulse.elastic.mapping import MappingError
from mlpulse.elastic.setup import (
    Artifacts,
    Executor,
    Passwords,
    Settings,
    SetupError,
    build_plan,
    describe_plan,
    passwords_from_env,
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mlpulse elastic-setup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", action="store_true", help="print the setup requests as JSON, passwords hidden; "
                    "send nothing")
    ap.add_argument("--root", default=".", help="where the generated files are (default .)")
    ap.add_argument("--bundle", action="append", default=[],
                    help="generate from these bundles instead of reading the files")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The job logs each step and each retry itself; the client's per-request lines would bury them.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    try:
        artifacts = Artifacts.from_bundles(args.bundle) if args.bundle else Artifacts.from_files(args.root)
        if args.plan:
            placeholder = Passwords(*(["***"] * 5))
            print(json.dumps(describe_plan(build_plan(artifacts, placeholder)), indent=2))
            return 0
        passwords = passwords_from_env(os.environ)
        plan = build_plan(artifacts, passwords)
        Executor(Settings.from_env(os.environ), passwords.elastic).run(plan)
        print("mlpulse elastic-setup: done")
        return 0
    except (SetupError, MappingError, BundleError) as e:
        print(f"mlpulse elastic-setup: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
