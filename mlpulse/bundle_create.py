"""Bundle your own fitted model: ``mlpulse bundle create`` and ``create_bundle``.

From a training table, its target column and a fitted scikit-learn estimator, infer the feature
schema, score a holdout, build the reference profile, record the task, the classes (as the model
reports them) and the holdout metrics, and write a verified bundle that ``mlpulse serve`` and the
exporter read. Every inferred choice is reported (``Plan.notes``) and can be overridden with a
schema file (YAML) that ``write_schema_file`` writes for editing. ``docs/own-model.md`` is the
tutorial; the decisions are listed there too:

- numeric columns (integer or float; booleans become integers 0/1) get their training range as
  the allowed range: values outside it are scored and flagged ``out_of_range``;
- text and pandas-categorical columns are categorical: their categories are the most frequent
  ``max_categories`` (default 50) values; rarer ones, like any value never seen, are scored and
  flagged ``unseen_category``;
- every feature is nullable, unless the model fails on a missing value of it: a missing value is
  then refused (HTTP 422) rather than scored, and the note says so. A missing value never stops
  a feature the model can score without it;
- the reference is a holdout: ``holdout`` (a separate table) or, by default, a seeded 25 % of the
  table. Holdout metrics are only honest if the model was not fitted on those rows: pass the
  model's own validation data as ``holdout`` when it was fitted on the whole table.

Everything that makes a bundle unusable is refused here, before anything is written, with an
error naming it (``BundleCreateError``): a target among the model's features, a feature without
values, classes the model does not report or that collide, a model that fails on the holdout,
types skops does not trust. The bundle is written to a temporary directory and renamed into
place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlpulse import cardinality
from mlpulse.bundle import load_bundle, save_bundle
from mlpulse.predictor import Predictions, Predictor, model_input, python_scalar
from mlpulse.profile import build_profile
from mlpulse.quality.estimate import fit_for_bundle
from mlpulse.schema import FeatureSchema, FeatureSpec, Label, OutputSpec, label_key

DEFAULT_MAX_CATEGORIES = 50
DEFAULT_HOLDOUT_FRACTION = 0.25
# Types from these packages are trusted once skops lists them: the fitted estimators of the
# scientific stack. Anything else must be trusted by name, at bundle time and again at serve time.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
# And these names: a scikit-learn estimator with native categorical features holds
# ``functools.partial(sklearn.utils.validation.check_array, ...)``. skops loads a partial's function,
# arguments and keywords as nodes of their own, each under the same trust check, so a partial can
# only ever wrap what is trusted anyway.
TRUSTED_NAMES = ("functools.partial",)


def trusted_by_default(name: str) -> bool:
    return name.startswith(TRUSTED_PREFIXES) or name in TRUSTED_NAMES
INPUT_KINDS = ("frame", "array")  # how the model takes its input (docs/own-model.md)


class BundleCreateError(Exception):
    """The model and data cannot make a bundle; the message names the problem and the fix."""


@dataclass
class Plan:
    """What ``create_bundle`` inferred and decided; printed by the command."""

    schema: FeatureSchema
    output: OutputSpec
    input: str
    trusted_types: list[str]
    notes: list[str] = field(default_factory=list)


# -- reading ----------------------------------------------------------------------------------


def read_table(path: str | os.PathLike[str]) -> Any:
    """A CSV or Parquet file as a pandas DataFrame (by the file's suffix)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise BundleCreateError(f"no data file {p}")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(p)
        except ImportError as e:
            raise BundleCreateError(f"reading {p} needs a Parquet engine (pip install 'mlpulse[parquet]'): {e}") from None
    if suffix in (".csv", ".txt", ".gz"):
        return pd.read_csv(p)
    raise BundleCreateError(f"{p}: expected a .csv or .parquet file")


def load_model(spec: str, trust: Sequence[str] = ()) -> Any:
    """A fitted estimator from a skops file or a Python path ``module:attribute``."""
    if spec.endswith(".skops") or (Path(spec).is_file() and ":" not in spec):
        import skops.io as sio

        data = Path(spec).read_bytes()  # checked and loaded from the same bytes
        types = sio.get_untrusted_types(data=data)
        untrusted = untrusted_types(types, trust)
        if untrusted:
            raise BundleCreateError(_untrusted_message(untrusted))
        return sio.loads(data, trusted=types)
    module, sep, attribute = spec.partition(":")
    if not sep or not module or not attribute:
        raise BundleCreateError(f"--model {spec!r}: expected a .skops file or module:attribute")
    try:
        obj: Any = importlib.import_module(module)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise BundleCreateError(f"--model {spec!r}: {e}") from None
    return obj() if callable(obj) and not hasattr(obj, "predict") else obj


def untrusted_types(types: Iterable[str], trust: Sequence[str] = ()) -> list[str]:
    """The types neither from the trusted packages nor named in ``trust``."""
    return sorted(t for t in types if not trusted_by_default(t) and t not in set(trust))


def _untrusted_message(types: Sequence[str]) -> str:
    flags = " ".join(f"--trust {t}" for t in types)
    return (f"the model holds types outside scikit-learn, numpy and scipy that skops does not trust: {list(types)}. "
            f"Loading them can run their code. If you trust them, name them: {flags} (and again when serving: "
            f"MLPULSE_TRUSTED_TYPES)")


# -- inference --------------------------------------------------------------------------------


def infer_feature(name: str, column: Any, max_categories: int = DEFAULT_MAX_CATEGORIES) -> tuple[FeatureSpec, list[str]]:
    """The spec of one training column, and notes on what was decided."""
    import pandas as pd

    notes: list[str] = []
    present = column.dropna()
    if present.empty:
        raise BundleCreateError(f"feature {name!r} has no values in the data: drop it from the model or fix the data")
    if pd.api.types.is_bool_dtype(column):
        notes.append(f"{name}: booleans are served as integers 0 / 1")
        return FeatureSpec(name, "numeric", "int", True, 0.0, 1.0), notes
    if pd.api.types.is_numeric_dtype(column):
        values = present.astype(float)
        finite = values[np.isfinite(values)]
        if finite.empty:
            raise BundleCreateError(f"feature {name!r} has no finite values")
        dtype = "int" if pd.api.types.is_integer_dtype(column) else "float"
        return FeatureSpec(name, "numeric", dtype, True, float(finite.min()), float(finite.max())), notes
    texts = present.map(lambda v: v if isinstance(v, str) else str(v))
    if not all(isinstance(v, str) for v in present):
        notes.append(f"{name}: non-text values are served as their text (str())")
    counts = texts.value_counts(sort=True)
    categories = [str(c) for c in counts.index[:max_categories]]
    if len(counts) > max_categories:
        rare = int(counts.iloc[max_categories:].sum())
        notes.append(f"{name}: {len(counts)} categories, the {max_categories} most frequent kept; the other "
                     f"{len(counts) - max_categories} ({rare} rows) will be flagged unseen_category when served")
    return FeatureSpec(name, "categorical", "str", True, categories=tuple(categories)), notes


def _model_features(model: Any, table_columns: Sequence[str], target: str) -> tuple[list[str], str]:
    """(feature names in the model's order, input kind)."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
        if target in names:
            raise BundleCreateError(f"the target {target!r} is one of the model's input features: the model was "
                                    "fitted with its own answer; refit it without that column")
        absent = [n for n in names if n not in table_columns]
        if absent:
            raise BundleCreateError(f"the model expects columns the data does not have: {absent}")
        return names, "frame"
    names = [c for c in table_columns if c != target]
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and n_in != len(names):
        raise BundleCreateError(f"the model takes {n_in} features without names, the data has {len(names)} "
                                f"columns besides {target!r}: fit the model on a DataFrame so the names are known")
    return names, "array"


def to_records(frame: Any, schema: FeatureSchema) -> list[dict[str, Any]]:
    """Table rows as the JSON records a client would send (missing as None)."""
    out = []
    columns = {}
    for spec in schema.features:
        col = frame[spec.name].tolist()
        if spec.kind == "numeric":
            col = [None if v is None or (isinstance(v, float) and math.isnan(v)) else
                   (int(v) if spec.dtype == "int" else float(v)) for v in col]
        else:
            col = [None if v is None or (isinstance(v, float) and math.isnan(v)) else
                   (v if isinstance(v, str) else str(v)) for v in col]
        columns[spec.name] = col
    for i in range(len(frame)):
        out.append({name: columns[name][i] for name in schema.names})
    return out


def _output(model: Any, y: Any, declared_classes: Sequence[Label] | None, positive: Label | None,
            notes: list[str]) -> OutputSpec:
    from sklearn.base import is_classifier, is_regressor

    if is_regressor(model) and not is_classifier(model):
        values = np.asarray(y, dtype=float)
        return OutputSpec("regression", minimum=float(np.nanmin(values)), maximum=float(np.nanmax(values)),
                          probabilities=False)
    if not hasattr(model, "classes_"):
        raise BundleCreateError("the model is neither a fitted classifier (no classes_) nor a regressor")
    classes = tuple(python_scalar(c) for c in model.classes_)
    keys = [label_key(c) for c in classes]
    if len(set(keys)) != len(keys):
        raise BundleCreateError(f"the model's classes {list(classes)} collide once written as text: relabel them")
    if declared_classes is not None and [(type(c), c) for c in declared_classes] != [(type(c), c) for c in classes]:
        raise BundleCreateError(f"declared classes {list(declared_classes)} disagree with the model's classes_ "
                                f"{list(classes)} (same labels, same order, same types)")
    unknown = sorted({label_key(python_scalar(v)) for v in np.asarray(y).ravel() if v == v} - set(keys))
    if unknown:
        raise BundleCreateError(f"the target holds labels the model does not report: {unknown[:10]}; the model's "
                                f"classes are {list(classes)}")
    probabilities = hasattr(model, "predict_proba")
    if not probabilities:
        notes.append("the model has no predict_proba: predicted labels only (no probability, no score drift)")
    if positive is None and len(classes) == 2:
        positive = classes[1]
        notes.append(f"positive class: {positive!r} (the model's second class; override with positive_class)")
    if positive is not None and label_key(positive) not in keys:
        raise BundleCreateError(f"positive class {positive!r} is not one of the model's classes {list(classes)}")
    if positive is not None:
        positive = classes[keys.index(label_key(positive))]
    return OutputSpec("classification", classes=classes, positive_class=positive, probabilities=probabilities)


def _probe_nullable(model: Any, schema: FeatureSchema, input_kind: str, records: list[dict[str, Any]],
                    notes: list[str]) -> FeatureSchema:
    """Mark non-nullable every feature the model cannot score when it is missing."""
    sample = records[: min(5, len(records))]
    features, refused = [], []
    for spec in schema.features:
        if not spec.nullable:
            features.append(spec)
            continue
        probe = [{**r, spec.name: None} for r in sample]
        try:
            model.predict(model_input(probe, schema, input_kind))
        except Exception:  # any failure means the model cannot take a missing value there
            refused.append(spec.name)
            spec = replace(spec, nullable=False)
        features.append(spec)
    if refused:
        notes.append(f"the model fails on a missing value of {len(refused)} feature(s), so a missing value there is "
                     f"refused (422), not scored: {refused}")
    return FeatureSchema(tuple(features))


# -- schema file ------------------------------------------------------------------------------


def write_schema_file(path: str | os.PathLike[str], plan: Plan) -> Path:
    """The inferred schema as YAML, for editing and passing back as ``schema_file``."""
    import yaml

    data = {
        "features": {f.name: {k: v for k, v in f.to_dict().items() if k not in ("name", "description")}
                     for f in plan.schema.features},
        "output": {"positive_class": plan.output.positive_class} if plan.output.positive_class is not None else {},
    }
    p = Path(path)
    p.write_text("# mlpulse bundle schema: edit, then pass with --schema (docs/own-model.md)\n"
                 + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p


def _apply_schema_file(path: str | os.PathLike[str], schema: FeatureSchema) -> tuple[FeatureSchema, dict[str, Any]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    overrides = data.get("features") or {}
    unknown = sorted(set(overrides) - set(schema.names))
    if unknown:
        raise BundleCreateError(f"{path}: features the model does not take: {unknown}")
    features = []
    for spec in schema.features:
        change = dict(overrides.get(spec.name) or {})
        if "categories" in change:
            change["categories"] = tuple(str(c) for c in change["categories"])
        allowed = {"kind", "dtype", "nullable", "minimum", "maximum", "categories", "description"}
        bad = sorted(set(change) - allowed)
        if bad:
            raise BundleCreateError(f"{path}: feature {spec.name!r} has unknown keys {bad}; allowed: {sorted(allowed)}")
        features.append(replace(spec, **change))
    try:
        return FeatureSchema(tuple(features)), dict(data.get("output") or {})
    except ValueError as e:
        raise BundleCreateError(f"{path}: {e}") from None


# -- metrics ----------------------------------------------------------------------------------


def holdout_metrics(output: OutputSpec, y: Any, predicted: Any, proba: Any | None) -> dict[str, float]:
    from sklearn import metrics as m

    if output.task == "regression":
        y, predicted = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)
        return {"rmse": float(np.sqrt(m.mean_squared_error(y, predicted))),
                "mae": float(m.mean_absolute_error(y, predicted)), "r2": float(m.r2_score(y, predicted))}
    keys = list(output.class_keys)
    y_keys = [label_key(python_scalar(v)) for v in np.asarray(y).ravel()]
    p_keys = [label_key(python_scalar(v)) for v in np.asarray(predicted).ravel()]
    out = {"accuracy": float(m.accuracy_score(y_keys, p_keys)),
           "f1_macro": float(m.f1_score(y_keys, p_keys, labels=keys, average="macro", zero_division=0))}
    if proba is not None:
        onehot = np.array([[k == yk for k in keys] for yk in y_keys], dtype=float)
        # Cross-entropy of the true class's probability (what log_loss computes, without its label checks).
        out["log_loss"] = float(-np.mean(np.log(np.clip((onehot * proba).sum(axis=1), 1e-15, 1))))
        if output.kind == "binary" and len(set(y_keys)) == 2:
            pos = keys.index(label_key(output.positive_class))
            out["roc_auc"] = float(m.roc_auc_score(onehot[:, pos], proba[:, pos]))
            out["brier"] = float(np.mean((proba[:, pos] - onehot[:, pos]) ** 2))
    return out


def quality_baseline(output: OutputSpec, y: Any, predicted: Any, proba: Any | None) -> list[dict[str, Any]]:
    """The holdout's realized quality, as the exporter computes it on joined labels (mlpulse.quality)."""
    from mlpulse.quality.realized import baseline_entries, realized

    if output.task == "regression":
        return baseline_entries(realized(output, np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)))
    truth = [label_key(python_scalar(v)) for v in np.asarray(y).ravel()]
    return baseline_entries(realized(output, truth, [label_key(python_scalar(v)) for v in np.asarray(predicted).ravel()],
                                     proba))


# -- the whole step ---------------------------------------------------------------------------


def plan_bundle(model: Any, data: Any, target: str, *, max_categories: int = DEFAULT_MAX_CATEGORIES,
                schema_file: str | os.PathLike[str] | None = None, classes: Sequence[Label] | None = None,
                positive_class: Label | None = None, trust: Sequence[str] = ()) -> tuple[Plan, list[dict]]:
    """Infer everything ``create_bundle`` writes, refusing what cannot work. Returns the plan and
    the table as records (what a client would send)."""
    import skops.io as sio

    if target not in data.columns:
        raise BundleCreateError(f"no target column {target!r} in the data; columns: {list(data.columns)[:20]}")
    names, input_kind = _model_features(model, [str(c) for c in data.columns], target)
    notes: list[str] = []
    dropped = [c for c in data.columns if c != target and c not in names]
    if dropped:
        notes.append(f"columns the model does not take are left out: {dropped}")
    specs = []
    for name in names:
        spec, n = infer_feature(name, data[name], max_categories)
        specs.append(spec)
        notes += n
    schema = FeatureSchema(tuple(specs))
    overrides: dict[str, Any] = {}
    if schema_file is not None:
        schema, overrides = _apply_schema_file(schema_file, schema)
        notes.append(f"schema overrides from {schema_file}")
    if input_kind == "array" and any(f.kind == "categorical" for f in schema.features):
        raise BundleCreateError("the model takes a plain array (fitted without column names) but the data has text "
                                "columns: fit a pipeline on a DataFrame so the service can pass names and categories")
    output = _output(model, data[target], classes, overrides.get("positive_class", positive_class), notes)
    types = sio.get_untrusted_types(data=sio.dumps(model))
    untrusted = untrusted_types(types, trust)
    if untrusted:
        raise BundleCreateError(_untrusted_message(untrusted))
    trusted = sorted(types)
    records = to_records(data, schema)
    schema = _probe_nullable(model, schema, input_kind, records, notes)
    return Plan(schema, output, input_kind, trusted, notes), records


def score(model: Any, plan: Plan, records: Sequence[dict[str, Any]]) -> Predictions:
    """What the service will answer for ``records``: the same ``Predictor``."""
    return Predictor(model, plan.schema, plan.output, plan.input)(records)


def create_bundle(
    out: str | os.PathLike[str],
    model: Any,
    data: Any,
    target: str,
    *,
    name: str | None = None,
    version: str = "1",
    holdout: Any | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = 0,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    schema_file: str | os.PathLike[str] | None = None,
    classes: Sequence[Label] | None = None,
    positive_class: Label | None = None,
    trust: Sequence[str] = (),
    force: bool = False,
) -> Plan:
    """Write a verified bundle for ``model`` to ``out``; returns what was inferred (see the module)."""
    out = Path(out)
    if out.exists() and not force:
        raise BundleCreateError(f"{out} exists: choose another directory or replace it (--force)")
    plan, records = plan_bundle(model, data, target, max_categories=max_categories, schema_file=schema_file,
                                classes=classes, positive_class=positive_class, trust=trust)
    try:  # they become metric labels on the service and the exporter, which would refuse the bundle
        cardinality.check_labels(name or out.name, version, plan.schema, plan.output, None)
    except cardinality.BudgetError as e:
        raise BundleCreateError(str(e)) from None
    if holdout is None:
        rng = np.random.default_rng(seed)
        n = len(records)
        take = np.sort(rng.choice(n, size=max(1, int(round(n * holdout_fraction))), replace=False))
        hold_records = [records[i] for i in take]
        y_hold = np.asarray(data[target])[take]
        plan.notes.append(f"holdout: {len(take)} of {n} rows of the data, seed {seed} (pass a holdout table "
                          "if the model was fitted on all of them)")
    else:
        hold_records = to_records(holdout, plan.schema)
        y_hold = np.asarray(holdout[target])
    try:
        p = score(model, plan, hold_records)
        values, labels, proba = p.values, p.labels, p.probabilities
    except Exception as e:
        raise BundleCreateError(f"the model fails on the holdout ({type(e).__name__}: {e})") from None
    metrics = holdout_metrics(plan.output, y_hold, labels if labels is not None else values, proba)
    metrics["holdout_rows"] = len(hold_records)
    baseline = quality_baseline(plan.output, y_hold, labels if labels is not None else values, proba)
    profile = build_profile(
        plan.schema,
        {n: [r[n] for r in hold_records] for n in plan.schema.names},
        prediction=values,
        predicted_class=[label_key(c) for c in labels] if labels is not None else None,
        classes=plan.output.class_keys,
        class_probabilities=proba if (proba is not None and plan.output.kind == "multiclass") else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # The label-free estimate, fitted on the same holdout (docs/quality.md); labels-only
        # classifiers get a record saying why there is none.
        quality_estimator = fit_for_bundle(staging, plan.output, plan.schema, hold_records, list(y_hold), values,
                                           [label_key(c) for c in labels] if labels is not None else None, proba,
                                           seed=seed)
        if not quality_estimator.get("method"):
            plan.notes.append(f"no label-free quality estimate: {quality_estimator['reason']}")
        save_bundle(staging, model, name=name or out.name, version=version,
                    trained_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), schema=plan.schema,
                    output=plan.output, profile=profile, metrics=metrics,
                    extra={"quality_baseline": baseline, "input": plan.input, "trusted_types": plan.trusted_types,
                           "decision_threshold": 0.5 if plan.output.kind == "binary" else None,
                           "quality_estimator": quality_estimator})
        load_bundle(staging, trusted=plan.trusted_types)  # verify what was written before it counts
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan
