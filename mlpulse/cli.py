"""The ``mlpulse`` command: one entry point for what a user runs.

    mlpulse bundle create ...         bundle a fitted model with its data (``mlpulse.bundle_create``)
    mlpulse serve DIR [options]       serve a bundle under gunicorn (``mlpulse.serving``)
    mlpulse exporter [options]        the drift exporter (``mlpulse exporter --help``)
    mlpulse report --bundle DIR ...   an offline HTML drift report (``mlpulse.report``)
    mlpulse generate [--check] ...    write or check every generated file (``mlpulse.generate``)
    mlpulse elastic-setup [options]   apply the ELK artefacts to Elasticsearch and Kibana

Each subcommand keeps its own options and help; ``python -m mlpulse`` is the same command and
``python -m mlpulse.exporter`` / ``python -m mlpulse.elastic`` remain aliases. Commands that later
capabilities add register in ``COMMANDS``.
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


def _bundle(argv: list[str]) -> int:
    from mlpulse.bundle import BundleError
    from mlpulse.bundle_create import (
        DEFAULT_HOLDOUT_FRACTION,
        DEFAULT_MAX_CATEGORIES,
        BundleCreateError,
        create_bundle,
        load_model,
        plan_bundle,
        read_table,
        write_schema_file,
    )

    ap = argparse.ArgumentParser(prog="mlpulse bundle", description="Bundle a fitted scikit-learn model with its "
                                 "training data: schema, reference profile, holdout metrics (docs/own-model.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="write a verified bundle")
    c.add_argument("--data", required=True, help="training table: .csv or .parquet")
    c.add_argument("--target", required=True, help="the target column of --data")
    c.add_argument("--model", required=True, help="the fitted estimator: a .skops file or module:attribute")
    c.add_argument("--out", type=Path, required=True, help="bundle directory to write (must not exist)")
    c.add_argument("--name", help="model name (default: the --out directory's name)")
    c.add_argument("--version", default="1", help="model version (default 1)")
    c.add_argument("--holdout", help="a separate holdout table with the same columns (default: a seeded "
                   f"{DEFAULT_HOLDOUT_FRACTION * 100:.0f}%% of --data)")  # %% : argparse formats help with %
    c.add_argument("--seed", type=int, default=0, help="seed of the holdout draw (default 0)")
    c.add_argument("--max-categories", type=int, default=DEFAULT_MAX_CATEGORIES,
                   help=f"categories kept per text column (default {DEFAULT_MAX_CATEGORIES})")
    c.add_argument("--schema", help="YAML overrides of the inferred schema (see --write-schema)")
    c.add_argument("--write-schema", metavar="FILE", help="write the inferred schema to FILE for editing, and stop")
    c.add_argument("--positive-class", help="binary: the class whose probability is the score (a label's text)")
    c.add_argument("--trust", action="append", default=[], metavar="TYPE",
                   help="a type outside scikit-learn/numpy/scipy that you trust the model to hold (repeatable)")
    c.add_argument("--force", action="store_true", help="replace --out if it exists")
    d = sub.add_parser("digest", help="print the digest a deployment pins (MLPULSE_BUNDLE_DIGEST)")
    d.add_argument("dir", help="bundle directory")
    args = ap.parse_args(argv)
    if args.command == "digest":
        from mlpulse.bundle import bundle_digest

        try:
            print(bundle_digest(args.dir))
        except BundleError as e:
            print(f"mlpulse bundle digest: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        model = load_model(args.model, args.trust)
        data = read_table(args.data)
        holdout = read_table(args.holdout) if args.holdout else None
        positive = _label_from_text(args.positive_class, model) if args.positive_class is not None else None
        if args.write_schema:
            plan, _ = plan_bundle(model, data, args.target, max_categories=args.max_categories,
                                  schema_file=args.schema, positive_class=positive, trust=args.trust)
            _print_plan(plan)
            print(f"wrote {write_schema_file(args.write_schema, plan)}: edit it, then pass --schema")
            return 0
        plan = create_bundle(args.out, model, data, args.target, name=args.name, version=args.version,
                             holdout=holdout, seed=args.seed, max_categories=args.max_categories,
                             schema_file=args.schema, positive_class=positive, trust=args.trust, force=args.force)
    except (BundleCreateError, BundleError) as e:
        print(f"mlpulse bundle create: {e}", file=sys.stderr)
        return 2
    _print_plan(plan)
    print(f"bundle written to {args.out}")
    return 0


def _label_from_text(text: str, model: object) -> object:
    """The model's class whose text is ``text`` (a command line carries text only)."""
    from mlpulse.predictor import python_scalar
    from mlpulse.schema import label_key

    for c in getattr(model, "classes_", ()):
        if label_key(python_scalar(c)) == text:
            return python_scalar(c)
    return text


def _print_plan(plan: object) -> None:
    schema, output = plan.schema, plan.output  # type: ignore[attr-defined]
    print(f"task: {output.kind}" + (f", classes {list(output.classes)}" if output.classes else "")
          + (f", positive class {output.positive_class!r}" if output.positive_class is not None else "")
          + f"; input: {plan.input}")  # type: ignore[attr-defined]
    for f in schema.features:
        what = (f"categorical, {len(f.categories)} categories" if f.kind == "categorical"
                else f"{f.dtype} in [{f.minimum:g}, {f.maximum:g}]" if f.minimum is not None else f.dtype)
        print(f"  {f.name}: {what}{', nullable' if f.nullable else ', required'}")
    for note in plan.notes:  # type: ignore[attr-defined]
        print(f"  note: {note}")


def _serve(argv: list[str]) -> int:
    import os

    ap = argparse.ArgumentParser(prog="mlpulse serve", description="Serve a bundle under gunicorn: POST /v1/predict, "
                                 "/metrics, /openapi.json (README, Configuration, lists every variable).")
    ap.add_argument("bundle", help="bundle directory")
    ap.add_argument("--bind", help="HOST:PORT (default MODEL_SERVICE_BIND or 127.0.0.1:8000)")
    ap.add_argument("--workers", type=int, help="gunicorn workers (default MODEL_SERVICE_WORKERS or 2)")
    ap.add_argument("--events", help="event log directory (default MLPULSE_EVENTS_DIR or var/events)")
    ap.add_argument("--trust", action="append", default=[], metavar="TYPE",
                    help="a type outside scikit-learn/numpy/scipy the model may hold (repeatable)")
    args = ap.parse_args(argv)
    env = dict(os.environ, MODEL_BUNDLE_DIR=os.path.abspath(args.bundle))
    for key, value in (("MODEL_SERVICE_BIND", args.bind), ("MODEL_SERVICE_WORKERS", args.workers),
                       ("MLPULSE_EVENTS_DIR", args.events)):
        if value is not None:
            env[key] = str(value)
    if args.trust:
        env["MLPULSE_TRUSTED_TYPES"] = ",".join(filter(None, [env.get("MLPULSE_TRUSTED_TYPES", ""), *args.trust]))
    from mlpulse.bundle import BundleError, load_reference

    try:
        load_reference(args.bundle)  # a clear error here rather than in every worker's log
    except BundleError as e:
        print(f"mlpulse serve: {e}", file=sys.stderr)
        return 2
    from mlpulse.serving import gunicorn_conf_path

    # gunicorn becomes this process: its signals (TERM, HUP, TTIN) work as documented.
    os.execve(sys.executable, [sys.executable, "-m", "gunicorn", "-c", gunicorn_conf_path()], env)
    return 0  # not reached


def _report(argv: list[str]) -> int:
    import datetime as dt

    from mlpulse.bundle import BundleError
    from mlpulse.durations import parse_duration
    from mlpulse.report import build_report, write_report

    ap = argparse.ArgumentParser(prog="mlpulse report", description="A self-contained offline HTML drift report: "
                                 "the events of a time range against the bundle's reference, with the exporter's "
                                 "statistics and decision.")
    ap.add_argument("--bundle", required=True, help="bundle directory (the model version to report on)")
    ap.add_argument("--events", default="var/events/*.jsonl", help="glob of the event files")
    ap.add_argument("--until", help="end of the range, ISO 8601 (default: now)")
    ap.add_argument("--since", default="24h", help="start: ISO 8601, or a duration before --until (default 24h)")
    ap.add_argument("--steps", type=int, default=12, help="sub-windows for the charts over time (default 12)")
    ap.add_argument("--out", type=Path, default=Path("var/report.html"), help="where to write the page")
    ap.add_argument("--config", help="the exporter's TOML configuration (decision rule; source = elasticsearch "
                    "with its URL reads the events from Elasticsearch); MLPULSE_EXPORTER_* variables apply too")
    args = ap.parse_args(argv)

    def when(text: str) -> dt.datetime:
        t = dt.datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

    try:
        until = when(args.until) if args.until else dt.datetime.now(dt.UTC)
        try:
            since = until - dt.timedelta(seconds=parse_duration(args.since))
        except ValueError:
            since = when(args.since)
        from mlpulse.exporter.config import ConfigError, load_config

        # The report's own events and bundle; the rest (decision, source) from the exporter's configuration.
        config = load_config(["--events", args.events, "--bundles", args.bundle, "--checkpoint", ""]
                             + (["--config", args.config] if args.config else []))
        report = build_report(args.bundle, args.events, since, until, args.steps, config)
    except (BundleError, ValueError, ConfigError) as e:
        print(f"mlpulse report: {e}", file=sys.stderr)
        return 2
    path = write_report(args.out, report)
    drifted = [f.name for f in report.features if f.detected]
    print(f"{report.records} records; drifted: {', '.join(drifted) or 'none'}; report written to {path}")
    return 0


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
    "bundle": ("bundle a fitted model with its training data (bundle create)", _bundle),
    "serve": ("serve a bundle under gunicorn", _serve),
    "exporter": ("run the drift exporter", _exporter),
    "report": ("write an offline HTML drift report from the event files", _report),
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
