"""The ``mlpulse`` command: one entry point for what a user runs.

    mlpulse exporter [options]        the drift exporter (``mlpulse exporter --help``)
    mlpulse generate [--check] ...    write or check every generated file (``mlpulse.generate``)
    mlpulse elastic-setup [options]   apply the ELK artefacts to Elasticsearch and Kibana

Each subcommand keeps its own options and help; ``python -m mlpulse`` is the same command and
``python -m mlpulse.exporter`` / ``python -m mlpulse.elastic`` remain aliases. Commands that later
capabilities add (``bundle``, ``serve``, ``report``) register in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _exporter(argv: list[str]) -> int:
    from mlpulse.exporter.__main__ import main

    return main(argv)


def _elastic_setup(argv: list[str]) -> int:
    from mlpulse.elastic.__main__ import main

    return main(argv)


def _generate(argv: list[str]) -> int:
    from mlpulse.bundle import BundleError
    from mlpulse.elastic.mapping import MappingError
    from mlpulse.generate import ARTIFACTS, COMMITTED, GenerateError, generate

    ap = argparse.ArgumentParser(
        prog="mlpulse generate",
        description="Write (or with --check, compare) every generated file: " + ", ".join(ARTIFACTS) + ". "
        "Without ARTIFACT: the committed ones (" + ", ".join(COMMITTED) + "), plus native with --native-out; "
        "--check alone checks all three.")
    ap.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                    help="which generators to run, of " + ", ".join(ARTIFACTS) + " (default: see above)")
    ap.add_argument("--root", type=Path, default=Path("."), help="the project's root (default .)")
    ap.add_argument("--bundle", action="append", default=[], metavar="DIR",
                    help="bundle whose schema the elastic artefacts describe (repeat for several models)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file differs")
    ap.add_argument("--native-out", type=Path, metavar="DIR",
                    help="where the native Prometheus and Alertmanager configurations go")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.artifacts) - set(ARTIFACTS))
    if unknown:
        ap.error(f"unknown artifact {unknown}; known: {', '.join(ARTIFACTS)}")
    names = args.artifacts or (list(ARTIFACTS) if args.check or args.native_out else list(COMMITTED))
    if "native" in names and not (args.check or args.native_out):
        ap.error("native needs --native-out DIR (the native configurations are not committed)")
    try:
        report = generate(names, args.root, args.bundle, check=args.check, native_out=args.native_out)
    except (GenerateError, BundleError, MappingError, ValueError, OSError) as e:
        print(f"mlpulse generate: {e}", file=sys.stderr)
        return 2
    for rel in report.written:
        print(f"wrote {rel}")
    if report.stale and not args.check:  # only files no generator writes are left: say so, never delete
        for problem in report.stale:
            print(f"warning: {problem}", file=sys.stderr)
    elif report.stale:
        for problem in report.stale:
            print(f"out of date: {problem}", file=sys.stderr)
        print("regenerate with: mlpulse generate --bundle DIR (make generate)", file=sys.stderr)
        return 1
    if args.check:
        print(f"up to date: {', '.join(names)}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "exporter": ("run the drift exporter", _exporter),
    "generate": ("write or check the generated dashboards, ELK artefacts and native configurations", _generate),
    "elastic-setup": ("apply the ELK artefacts to Elasticsearch and Kibana (or --plan)", _elastic_setup),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items()]
    return "usage: mlpulse COMMAND [options]   (mlpulse COMMAND --help)\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"mlpulse: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return command[1](args[1:])


if __name__ == "__main__":
    sys.exit(main())
