import math

import pytest

from mlpulse.schema import UNKNOWN_FEATURE, FeatureSchema, FeatureSpec

SCHEMA = FeatureSchema(
    (
        FeatureSpec("n", "numeric", "float", minimum=0, maximum=10),
        FeatureSpec("i", "numeric", "int", nullable=True),
        FeatureSpec("c", "categorical", "str", categories=("a", "b")),
    )
)


def reasons(record):
    return sorted((v.feature, v.reason) for v in SCHEMA.check(record).violations)


def test_valid_record_has_no_violation_and_keeps_values():
    checked = SCHEMA.check({"n": 1.5, "i": 3, "c": "a"})
    assert checked.violations == []
    assert checked.values == {"n": 1.5, "i": 3, "c": "a"}


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"i": 1, "c": "a"}, [("n", "missing_required")]),
        ({"n": None, "c": "a"}, [("n", "missing_required")]),
        ({"n": "1", "c": "a"}, [("n", "wrong_type")]),
        ({"n": True, "c": "a"}, [("n", "wrong_type")]),
        ({"n": 1, "i": 1.5, "c": "a"}, [("i", "wrong_type")]),
        ({"n": 1, "c": 3}, [("c", "wrong_type")]),
        ({"n": math.nan, "c": "a"}, [("n", "non_finite")]),
        ({"n": math.inf, "c": "a"}, [("n", "non_finite")]),
        ({"n": 10**400, "c": "a"}, [("n", "non_finite")]),
        ({"n": 11, "c": "a"}, [("n", "out_of_range")]),
        ({"n": -0.1, "c": "a"}, [("n", "out_of_range")]),
        ({"n": 1, "c": "z"}, [("c", "unseen_category")]),
        ({"n": 1, "c": "a", "extra": 1}, [(UNKNOWN_FEATURE, "unknown_field")]),
    ],
)
def test_each_problem_is_named(record, expected):
    assert reasons(record) == expected


def test_nullable_missing_is_not_a_violation_and_integral_float_is_an_int():
    checked = SCHEMA.check({"n": 2, "i": 4.0, "c": "b"})
    assert checked.violations == []
    assert checked.values["i"] == 4 and isinstance(checked.values["i"], int)
    assert SCHEMA.check({"n": 2, "c": "b"}).values["i"] is None


def test_unknown_field_keeps_client_name_out_of_the_label():
    (v,) = SCHEMA.check({"n": 1, "c": "a", "x" * 500: 1}).violations
    assert v.feature == UNKNOWN_FEATURE and v.field == "x" * 128


def test_schema_round_trip_and_rejects_bad_definitions():
    assert FeatureSchema.from_list(SCHEMA.to_list()) == SCHEMA
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSchema((FeatureSpec("a", "numeric", "float"), FeatureSpec("a", "numeric", "float")))
    with pytest.raises(ValueError, match="no categories"):
        FeatureSchema((FeatureSpec("a", "categorical", "str"),))
