"""How a bundle's model is called, whatever its task: one place for the service and for
``mlpulse bundle create``, so the reference is scored exactly as live traffic is.

The bundle declares its input (``metadata["input"]``): ``frame``, a pandas DataFrame in schema
order (numeric columns float with NaN for missing, categorical columns object with None), or
``array``, a float numpy array in schema order (NaN for missing); or ``codes``, the same float
array with each categorical feature as the position of its value in the schema's ``categories``
(NaN for missing and for a category the schema does not list), the input of an estimator with
native categorical support (the reference model: ``HistGradientBoostingClassifier`` with
``categorical_features``). ``codes`` and ``array`` rows are built straight from the validated
records, without a DataFrame: one record costs microseconds instead of milliseconds
(docs/performance.md). What comes out, per task:

| task | ``values`` (the prediction score) | ``labels`` | ``probabilities`` |
|---|---|---|---|
| binary, with predict_proba | probability of the positive class | positive if >= the decision threshold | every class |
| multiclass, with predict_proba | probability of the predicted class (the model's confidence) | argmax | every class |
| classification without predict_proba | NaN (no score) | ``predict`` | None |
| regression | ``predict`` | None | None |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpulse.schema import FeatureSchema, Label, OutputSpec, label_key

# scikit-learn's per-call checks that a validated row does not need: parameters were checked at
# fit; for ``codes`` rows (trees taking NaN as missing) finiteness too, as the service has refused
# NaN/Infinity tokens. A frame or array model keeps its finiteness check (a missing value it cannot
# take must still fail loudly).
SKLEARN_FAST = {"skip_parameter_validation": True}
SKLEARN_FAST_CODES = {**SKLEARN_FAST, "assume_finite": True}


INPUT_KINDS = ("frame", "array", "codes")


class RowEncoder:
    """Validated records to the float matrix of the ``array`` and ``codes`` inputs; the category
    lookups are built once, so a call is one pass over the values."""

    def __init__(self, schema: FeatureSchema, codes: bool):
        self.names = schema.names
        # Per feature: None (a number) or its category -> code lookup.
        self.lookups = [{c: float(i) for i, c in enumerate(f.categories)} if codes and f.kind == "categorical"
                        else None for f in schema.features]

    def __call__(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        nan = np.nan
        rows = [[(nan if v is None else float(v)) if lk is None else lk.get(v, nan)
                 for v, lk in zip(map(r.get, self.names), self.lookups)] for r in records]
        return np.array(rows, dtype=float).reshape(len(records), len(self.names))


def model_input(records: Sequence[dict[str, Any]], schema: FeatureSchema, input_kind: str = "frame") -> Any:
    """What the model is called with for ``records`` (validated values, None for missing)."""
    if input_kind in ("array", "codes"):
        return RowEncoder(schema, codes=input_kind == "codes")(records)
    if input_kind != "frame":
        raise ValueError(f"unknown model input {input_kind!r}: one of {', '.join(INPUT_KINDS)}")
    import pandas as pd

    frame = pd.DataFrame.from_records(list(records), columns=schema.names)
    for spec in schema.features:
        if spec.kind == "numeric":
            frame[spec.name] = pd.to_numeric(frame[spec.name], errors="coerce").astype(float)
        else:
            frame[spec.name] = frame[spec.name].astype(object)
    return frame


def python_scalar(value: Any) -> Any:
    """A numpy scalar as the Python scalar JSON can carry."""
    return value.item() if isinstance(value, np.generic) else value


def _sklearn_of(model: Any) -> Any:
    """scikit-learn, when ``model`` is one of its estimators (a user's model may be anything)."""
    if not type(model).__module__.startswith("sklearn."):
        return None
    import sklearn

    return sklearn


@dataclass
class Predictions:
    values: np.ndarray  # float, NaN where there is no score
    labels: list[Label] | None  # classification: the model's labels, as it reports them
    probabilities: np.ndarray | None  # rows x classes, in ``Predictor.keys`` order


class Predictor:
    """Calls ``model`` as the bundle declares; see the module for what each task returns."""

    def __init__(self, model: Any, schema: FeatureSchema, output: OutputSpec, input_kind: str = "frame",
                 threshold: float | None = None):
        self.model, self.schema, self.output, self.input = model, schema, output, input_kind
        self.keys = output.class_keys
        self.threshold = 0.5 if threshold is None else float(threshold)
        self._columns: list[int] = []
        # Built once: the rows of an array input need no per-call setup (a frame has no encoder).
        self._sklearn = _sklearn_of(model)
        self._encode = RowEncoder(schema, codes=input_kind == "codes") if input_kind in ("array", "codes") else None
        if output.task == "classification":
            reported = [label_key(python_scalar(c)) for c in getattr(model, "classes_", ())]
            if sorted(reported) != sorted(self.keys):
                raise ValueError(f"the model's classes {reported} differ from the bundle's {list(self.keys)}")
            self._columns = [reported.index(k) for k in self.keys]  # predict_proba column of each class
        if output.kind == "binary" and output.probabilities:
            self.positive = self.keys.index(label_key(output.positive_class))
            self.negative = 1 - self.positive

    @classmethod
    def for_bundle(cls, bundle: Any) -> Predictor:
        return cls(bundle.model, bundle.schema, bundle.output, bundle.metadata.get("input", "frame"),
                   bundle.metadata.get("decision_threshold"))

    def __call__(self, records: Sequence[dict[str, Any]]) -> Predictions:
        x = self._encode(records) if self._encode is not None else model_input(records, self.schema, self.input)
        if self._sklearn is None:
            return self._call(x)
        with self._sklearn.config_context(**(SKLEARN_FAST_CODES if self.input == "codes" else SKLEARN_FAST)):
            return self._call(x)

    def _call(self, x: Any) -> Predictions:
        out = self.output
        if out.task == "regression":
            return Predictions(np.asarray(self.model.predict(x), dtype=float).ravel(), None, None)
        if not out.probabilities:
            labels = [python_scalar(v) for v in self.model.predict(x)]
            return Predictions(np.full(len(labels), np.nan), labels, None)
        proba = np.asarray(self.model.predict_proba(x), dtype=float)[:, self._columns]
        if out.kind == "binary":
            values = proba[:, self.positive]
            chosen = np.where(values >= self.threshold, self.positive, self.negative)
        else:
            chosen = proba.argmax(axis=1)
            values = proba[np.arange(len(chosen)), chosen]
        return Predictions(values, [out.classes[i] for i in chosen], proba)
