"""How the service calls a bundle's model: the ``codes`` rows of the reference model, and a
``frame`` bundle of the previous kind (imputer + one-hot pipeline on a DataFrame) still served."""

import math

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlpulse.bundle import load_bundle
from mlpulse.predictor import Predictor, RowEncoder, model_input
from mlpulse.schema import FeatureSchema, FeatureSpec, OutputSpec
from model_service.data import SCHEMA, frame_for_model, generate, rows_for_model, to_records
from model_service.train import CLASSES, OUTPUT, TRUSTED_TYPES

SMALL = FeatureSchema((FeatureSpec("x", "numeric", "float", nullable=True),
                       FeatureSpec("c", "categorical", "str", nullable=True, categories=("a", "b", "c"))))


def test_codes_rows_put_categories_at_their_schema_position():
    rows = RowEncoder(SMALL, codes=True)([{"x": 1, "c": "c"}, {"x": None, "c": "a"}, {"x": 2.5, "c": None},
                                          {"x": 0, "c": "never-seen"}])
    assert rows.dtype == float and rows.shape == (4, 2)
    assert rows[0].tolist() == [1.0, 2.0] and rows[1, 1] == 0.0 and rows[3, 0] == 0.0
    assert math.isnan(rows[1, 0]) and math.isnan(rows[2, 1]) and math.isnan(rows[3, 1])
    assert np.array_equal(model_input([{"x": 1, "c": "b"}], SMALL, "codes"), [[1.0, 1.0]])
    assert model_input([], SMALL, "codes").shape == (0, 2)


def test_reference_bundle_scores_codes_rows_as_its_model_does(bundle_dir):
    b = load_bundle(bundle_dir, trusted=TRUSTED_TYPES)
    assert b.metadata["input"] == "codes"
    records = [SCHEMA.check(r).values for r in to_records(generate(50, seed=21))]
    got = Predictor.for_bundle(b)(records)
    pos = list(b.model.classes_).index("default")
    expected = b.model.predict_proba(rows_for_model(records))[:, pos]
    np.testing.assert_allclose(got.values, expected, rtol=0, atol=0)
    assert got.labels == ["default" if p >= 0.5 else "no_default" for p in expected]


def test_a_frame_bundle_of_the_previous_kind_still_scores(tmp_path):
    """The pipeline the reference model was before (imputers and one-hot on a DataFrame)."""
    numeric = [f.name for f in SCHEMA.features if f.kind == "numeric"]
    categorical = [f.name for f in SCHEMA.features if f.kind == "categorical"]
    pre = ColumnTransformer([
        ("num", SimpleImputer(strategy="median", add_indicator=True), numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]), categorical)])
    df = generate(2000, seed=3)
    records = to_records(df)
    y = df["default"].map(dict(enumerate(CLASSES))).to_numpy()
    pipe = Pipeline([("pre", pre), ("clf", HistGradientBoostingClassifier(max_iter=20))]).fit(frame_for_model(records), y)
    predictor = Predictor(pipe, SCHEMA, OUTPUT, "frame")
    checked = [SCHEMA.check(r).values for r in records[:30]]
    got = predictor(checked)
    pos = list(pipe.classes_).index("default")
    np.testing.assert_allclose(got.values, pipe.predict_proba(frame_for_model(checked))[:, pos])
    assert OutputSpec.from_dict(OUTPUT.to_dict()) == OUTPUT
