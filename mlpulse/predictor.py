"""How a bundle's model is called, whatever its task: one place for the service and for
``mlpulse bundle create``, so the reference is scored exactly as live traffic is.

The bundle declares its input (``metadata["input"]``): ``frame``, a pandas DataFrame in schema
order (numeric columns float with NaN for missing, categorical columns object with None), or
``array``, a float numpy array in schema order (NaN for missing). What comes out, per task:

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


def model_input(records: Sequence[dict[str, Any]], schema: FeatureSchema, input_kind: str = "frame") -> Any:
    """What the model is called with for ``records`` (validated values, None for missing)."""
    if input_kind == "array":
        rows = [[np.nan if r.get(n) is None else float(r[n]) for n in schema.names] for r in records]
        return np.array(rows, dtype=float).reshape(len(records), len(schema.names))
    if input_kind != "frame":
        raise ValueError(f"unknown model input {input_kind!r}: frame or array")
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
        x = model_input(records, self.schema, self.input)
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
