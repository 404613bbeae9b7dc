"""``python -m mlpulse.elastic``: generate the ELK artefacts, show the setup plan, or run the setup.

    python -m mlpulse.elastic generate --bundle var/bundle [--bundle DIR ...] [--root .] [--check]
    python -m mlpulse.elastic plan [--root .]                 # the requests, passwords hidden
    python -m mlpulse.elastic setup [--root .] [--bundle DIR]  # environment: see docs/elk.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mlpulse.bundle import BundleError
from mlpulse.elastic.mapping import MappingError, models_from_bundles
from mlpulse.elastic.setup import (
    Artifacts,
    Executor,
    Passwords,
    Settings,
    SetupError,
    build_plan,
    describe_plan,
    passwords_from_env,
    render_files,
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mlpulse.elastic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the index template, ILM policy, roles and Kibana objects")
    gen.add_argument("--bundle", action="append", required=True, help="bundle directory (repeat for several models)")
    gen.add_argument("--root", default=".", help="repository root to write under (default .)")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    for name, text in (("plan", "print the setup requests as JSON, passwords hidden"),
                       ("setup", "apply everything to Elasticsearch and Kibana (idempotent)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--root", default=".", help="where the generated files are (default .)")
        p.add_argument("--bundle", action="append", default=[],
                       help="generate from these bundles instead of reading the files")
    return ap


def _artifacts(args: argparse.Namespace) -> Artifacts:
    return Artifacts.from_bundles(args.bundle) if args.bundle else Artifacts.from_files(args.root)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The job logs each step and each retry itself; the client's per-request lines would bury them.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    try:
        if args.command == "generate":
            files = render_files(models_from_bundles(args.bundle))
            stale = []
            for rel, content in files.items():
                path = Path(args.root) / rel
                if args.check:
                    if not path.is_file() or path.read_text() != content:
                        stale.append(rel)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
                print(f"wrote {rel}")
            if stale:
                print("out of date (run generate): " + ", ".join(stale), file=sys.stderr)
                return 1
            return 0
        if args.command == "plan":
            placeholder = Passwords(*(["***"] * 5))
            print(json.dumps(describe_plan(build_plan(_artifacts(args), placeholder)), indent=2))
            return 0
        passwords = passwords_from_env(os.environ)
        plan = build_plan(_artifacts(args), passwords)
        Executor(Settings.from_env(os.environ), passwords.elastic).run(plan)
        print("mlpulse elastic setup: done")
        return 0
    except (SetupError, MappingError, BundleError) as e:
        print(f"mlpulse elastic {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
