"""Feature and output schema of a model, and validation of one input record against it.

The schema lives in the bundle's ``metadata.json``; the service validates every record with it,
the profile builder bins by it, and the exporter and the Elasticsearch template read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["numeric", "categorical"]
Dtype = Literal["int", "float", "str"]

# Every reason a record can be flagged or refused for. Metric labels use these names only.
REASONS = (
    "missing_required",  # a non-nullable feature is absent or null
    "wrong_type",  # e.g. a string where a number is expected, or a bool
    "non_finite",  # NaN, Infinity or a number too large for a float
    "unknown_field",  # a field the schema does not know
    "out_of_range",  # a number outside the feature's allowed range
    "unseen_category",  # a category that training never saw
)
# A field the schema does not know is reported under this feature name: a metric label must never
# carry a name chosen by the client.
UNKNOWN_FEATURE = "_unknown"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: Kind
    dtype: Dtype
    nullable: bool = False
    minimum: float | None = None  # allowed range for numeric features (inclusive)
    maximum: float | None = None
    categories: tuple[str, ...] = ()  # allowed values for categorical features
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        d = dict(d)
        d["categories"] = tuple(d.get("categories") or ())
        return cls(**d)


Label = str | int | float | bool  # a class label as the model reports it (a JSON scalar)


def label_key(label: Label) -> str:
    """The text form of a class label: the label itself for a string, its JSON text otherwise
    (``1`` -> "1", ``True`` -> "true"), which is also what Elasticsearch indexes for a JSON scalar
    in a keyword field. Metric labels, profile categories and the exporter's lookup all use it."""
    return label if isinstance(label, str) else json.dumps(label)


@dataclass(frozen=True)
class OutputSpec:
    task: Literal["classification", "regression"]
    classes: tuple[Label, ...] = ()  # classification: the model's labels, as it reports them, in its order
    positive_class: Label | None = None  # binary: the class whose probability is "the prediction"
    minimum: float | None = None  # regression: expected range
    maximum: float | None = None
    probabilities: bool = True  # classification: the model has predict_proba

    @property
    def kind(self) -> str:
        """binary, multiclass or regression."""
        if self.task == "regression":
            return "regression"
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def class_keys(self) -> tuple[str, ...]:
        return tuple(label_key(c) for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputSpec:
        d = dict(d)
        d["classes"] = tuple(d.get("classes") or ())
        return cls(**d)


@dataclass(frozen=True)
class Violation:
    feature: str  # a schema feature name, or UNKNOWN_FEATURE: safe as a metric label
    reason: str  # one of REASONS
    detail: str  # human-readable, for the client and the log
    field: str = ""  # the field name as the client sent it (differs only for unknown fields)

    def to_dict(self) -> dict[str, str]:
        return {"feature": self.feature, "field": self.field or self.feature, "reason": self.reason,
                "detail": self.detail}


@dataclass
class CheckedRecord:
    """A record after validation: the values to score (None for missing) and what was wrong."""

    values: dict[str, Any]
    violations: list[Violation] = field(default_factory=list)


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[FeatureSpec, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in schema: {names}")
        for f in self.features:
            if f.kind == "categorical" and not f.categories:
                raise ValueError(f"categorical feature {f.name!r} has no categories")
            if f.kind == "numeric" and f.dtype == "str":
                raise ValueError(f"numeric feature {f.name!r} cannot have dtype str")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def __getitem__(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> FeatureSchema:
        return cls(tuple(FeatureSpec.from_dict(i) for i in items))

    def check(self, record: dict[str, Any]) -> CheckedRecord:
        """Validate one record (a JSON object already parsed) against the schema.

        Never raises on bad data: every problem becomes a Violation, and the caller's policy
        decides which reasons refuse the record.
        """
        checked = CheckedRecord(values={})
        known = set()
        for spec in self.features:
            known.add(spec.name)
            raw = record.get(spec.name)
            value, problem = _check_value(spec, raw)
            checked.values[spec.name] = value
            if problem is not None:
                checked.violations.append(Violation(spec.name, *problem))
        for name in record:
            if name not in known:
                # The detail may name the field for the client; the metric label will not.
                checked.violations.append(
                    Violation(UNKNOWN_FEATURE, "unknown_field", "not in the model's feature schema", field=name[:128])
                )
        return checked


def _check_value(spec: FeatureSpec, raw: Any) -> tuple[Any, tuple[str, str] | None]:
    """Return (value to score, (reason, detail) or None)."""
    if raw is None:
        if spec.nullable:
            return None, None
        return None, ("missing_required", "required and not nullable, but absent or null")
    if spec.kind == "categorical":
        if not isinstance(raw, str):
            return None, ("wrong_type", f"expected a string category, got {_json_type(raw)}")
        if raw not in spec.categories:
            return raw, ("unseen_category", f"category {raw[:64]!r} was not seen in training")
        return raw, None
    # numeric
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None, ("wrong_type", f"expected a number, got {_json_type(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        return None, ("non_finite", "NaN and Infinity are not accepted")
    if spec.dtype == "int" and isinstance(raw, float):
        if not raw.is_integer():
            return None, ("wrong_type", f"expected an integer, got {raw!r}")
        raw = int(raw)
    try:
        value = float(raw)
    except OverflowError:  # an integer too large for a float
        return None, ("non_finite", "number too large for a float")
    if (spec.minimum is not None and value < spec.minimum) or (
        spec.maximum is not None and value > spec.maximum
    ):
        return raw, ("out_of_range", f"{raw!r} is outside [{spec.minimum}, {spec.maximum}]")
    return raw, None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
