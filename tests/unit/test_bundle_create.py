"""``mlpulse bundle create`` on data sets shipped with scikit-learn: what is inferred, what is refused
at bundle time, and how each kind of class label is served (through the service's app)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlpulse.bundle import load_bundle, load_reference
from mlpulse.bundle_create import BundleCreateError, create_bundle, plan_bundle, read_table, write_schema_file
from mlpulse.cli import main
from mlpulse.serving.app import ServiceConfig, create_app
from tests.helpers import read_events, samples, value


def cancer() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    return frame[["mean radius", "mean texture", "mean smoothness", "worst area", "target"]]


def fit(frame: pd.DataFrame, target: str = "target", estimator=None):
    x = frame.drop(columns=target)
    model = estimator or make_pipeline(SimpleImputer(), LogisticRegression(max_iter=2000))
    return model.fit(x, frame[target])


def serve(bundle: Path, tmp_path: Path):
    app = create_app(ServiceConfig(bundle_dir=str(bundle), events_dir=str(tmp_path / "events")))
    return app.test_client()


def records(frame: pd.DataFrame, n: int, target: str = "target") -> list[dict]:
    return json.loads(frame.drop(columns=target).head(n).to_json(orient="records"))


# -- inference ---------------------------------------------------------------------------------

def test_binary_bundle_infers_schema_task_and_metrics(tmp_path):
    frame = cancer()
    model = fit(frame)
    plan = create_bundle(tmp_path / "b", model, frame, "target")
    assert plan.output.kind == "binary" and plan.output.classes == (0, 1) and plan.output.positive_class == 1
    assert plan.input == "frame"
    spec = plan.schema["mean radius"]
    assert (spec.kind, spec.dtype, spec.nullable) == ("numeric", "float", True)
    assert (spec.minimum, spec.maximum) == (frame["mean radius"].min(), frame["mean radius"].max())
    metadata, schema, output, profile = load_reference(tmp_path / "b")
    assert output.classes == (0, 1)  # ints stay ints in the bundle
    assert metadata["metrics"]["roc_auc"] > 0.9 and metadata["metrics"]["holdout_rows"] == round(len(frame) * 0.25)
    assert profile["predicted_class"]["categories"] == ["0", "1"]
    assert profile["row_count"] == metadata["metrics"]["holdout_rows"]


def test_a_model_that_cannot_take_a_missing_value_makes_that_feature_required(tmp_path):
    frame = cancer()
    plan = create_bundle(tmp_path / "b", fit(frame, estimator=LogisticRegression(max_iter=2000)), frame, "target")
    assert not any(f.nullable for f in plan.schema.features)
    assert any("fails on a missing value" in n for n in plan.notes)
    imputed = create_bundle(tmp_path / "c", fit(frame), frame, "target")
    assert all(f.nullable for f in imputed.schema.features)


def test_text_columns_are_categorical_with_a_cap(tmp_path):
    frame = cancer()
    frame.insert(0, "grade", np.where(frame["mean radius"] > 14, "high", "low"))
    frame.insert(0, "code", [f"c{i % 70}" for i in range(len(frame))])
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["grade", "code"])],
                            remainder=SimpleImputer())
    model = fit(frame, estimator=make_pipeline(pre, LogisticRegression(max_iter=2000)))
    plan = create_bundle(tmp_path / "b", model, frame, "target", max_categories=50)
    assert plan.schema["grade"].categories == ("low", "high") or set(plan.schema["grade"].categories) == {"low", "high"}
    assert len(plan.schema["code"].categories) == 50
    assert any("code: 70 categories" in n for n in plan.notes)


def test_schema_file_round_trip_overrides_the_inference(tmp_path):
    frame = cancer()
    model = fit(frame)
    plan, _ = plan_bundle(model, frame, "target")
    path = write_schema_file(tmp_path / "schema.yml", plan)
    path.write_text(path.read_text().replace("nullable: true", "nullable: false", 1))
    changed = create_bundle(tmp_path / "b", model, frame, "target", schema_file=path)
    assert not changed.schema["mean radius"].nullable and changed.schema["mean texture"].nullable
    data = yaml.safe_load(path.read_text())
    data["features"]["nonsense"] = {"kind": "numeric"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(BundleCreateError, match="features the model does not take"):
        create_bundle(tmp_path / "c", model, frame, "target", schema_file=path)


# -- refusals at bundle time -------------------------------------------------------------------

def refused(tmp_path, match, *args, **kwargs):
    out = tmp_path / "refused"
    with pytest.raises(BundleCreateError, match=match):
        create_bundle(out, *args, **kwargs)
    assert not out.exists() and not list(tmp_path.glob(".refused.*")), "a partial bundle was left behind"


def test_refusals_name_the_problem_and_leave_nothing(tmp_path):
    frame = cancer()
    leaky = frame.assign(answer=frame["target"])
    refused(tmp_path, "target 'answer' is one of the model's input features",
            fit(leaky, estimator=LogisticRegression(max_iter=2000)).fit(leaky.drop(columns="target"), leaky["target"]),
            leaky, "answer")
    empty = frame.assign(blank=np.nan)
    refused(tmp_path, "feature 'blank' has no values", fit(empty, estimator=make_pipeline(
        SimpleImputer(keep_empty_features=True), LogisticRegression(max_iter=2000))), empty, "target")
    refused(tmp_path, "declared classes", fit(frame), frame, "target", classes=["0", "1"])
    fewer = fit(frame[frame["target"] == 1].assign(target=np.arange((frame["target"] == 1).sum()) % 2))
    refused(tmp_path, "labels the model does not report", fewer,
            frame.assign(target=frame["target"] + 1), "target")

    fragile = make_pipeline(FunctionTransformer(_explode_on_many), LogisticRegression(max_iter=2000))
    few = frame.groupby("target").head(4)
    fragile.fit(few.drop(columns="target"), few["target"])
    refused(tmp_path, "fails on the holdout", fragile, frame, "target", trust=[_name(_explode_on_many)])


def _explode_on_many(x):
    """A step that works on the few rows it was fitted on and fails on the holdout."""
    if len(x) > 10:
        raise RuntimeError("boom")
    return x


def _name(fn) -> str:
    return f"{fn.__module__}.{fn.__name__}"


def test_classes_that_read_the_same_as_text_are_refused(tmp_path):
    frame = cancer()
    model = DummyClassifier().fit(frame.drop(columns="target"), frame["target"])
    model.classes_ = np.array([1, "1"], dtype=object)
    refused(tmp_path, "collide once written as text", model, frame.assign(target=1), "target")


def test_parquet_and_csv_tables_give_the_same_bundle_schema(tmp_path):
    frame = cancer()
    model = fit(frame)
    sio.dump(model, tmp_path / "model.skops")
    frame.to_parquet(tmp_path / "data.parquet")
    for data in (_csv(frame, tmp_path), tmp_path / "data.parquet"):
        out = tmp_path / f"b-{data.suffix[1:]}"
        assert main(["bundle", "create", "--data", str(data), "--target", "target", "--model",
                     str(tmp_path / "model.skops"), "--out", str(out)]) == 0
    assert (json.loads((tmp_path / "b-csv" / "metadata.json").read_text())["features"]
            == json.loads((tmp_path / "b-parquet" / "metadata.json").read_text())["features"])
    with pytest.raises(BundleCreateError, match="expected a .csv or .parquet"):
        read_table(_csv(frame, tmp_path).rename(tmp_path / "data.xlsx"))


def test_a_foreign_type_is_refused_until_trusted_by_name(tmp_path, capsys):
    frame = cancer()
    model = fit(frame)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    # A pipeline step from outside scikit-learn, numpy and scipy: this test module's own function.
    odd = make_pipeline(FunctionTransformer(_identity), LogisticRegression(max_iter=2000))
    odd.fit(frame.drop(columns="target"), frame["target"])
    odd_path = tmp_path / "odd.skops"
    sio.dump(odd, odd_path)
    data = _csv(frame, tmp_path)
    argv = ["bundle", "create", "--data", str(data), "--target", "target", "--model", str(odd_path)]
    assert main([*argv, "--out", str(tmp_path / "odd")]) == 2
    err = capsys.readouterr().err
    assert f"'{_name(_identity)}'" in err and f"--trust {_name(_identity)}" in err
    assert not (tmp_path / "odd").exists()
    assert main([*argv, "--out", str(tmp_path / "odd"), "--trust", _name(_identity)]) == 0
    # Serving needs the same trust again: the bundle does not vouch for its own code.
    with pytest.raises(Exception, match="not trusted"):
        create_app(ServiceConfig(bundle_dir=str(tmp_path / "odd"), events_dir=str(tmp_path / "ev")))
    create_app(ServiceConfig(bundle_dir=str(tmp_path / "odd"), events_dir=str(tmp_path / "ev"),
                             trusted_types=(_name(_identity),)))
    assert main(["bundle", "create", "--data", str(data), "--target", "target", "--model", str(path),
                 "--out", str(tmp_path / "plain")]) == 0
    assert "task: binary, classes [0, 1]" in capsys.readouterr().out


def _identity(x):
    return x


def _csv(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


# -- class labels, served ----------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "answered", "texts"), [
    ((0, 1), [0, 1], ["0", "1"]),
    ((False, True), [False, True], ["false", "true"]),
    (("0", "1"), ["0", "1"], ["0", "1"]),
    (("no", "yes"), ["no", "yes"], ["no", "yes"]),
])
def test_each_kind_of_label_is_served_as_the_model_reports_it(tmp_path, labels, answered, texts):
    frame = cancer()
    frame["target"] = [labels[int(v)] for v in frame["target"]]
    bundle = tmp_path / "b"
    create_bundle(bundle, fit(frame), frame, "target")
    client = serve(bundle, tmp_path)
    body = client.post("/v1/predict", json=records(frame, 40)).get_json()
    got = [p["prediction"]["class"] for p in body["predictions"]]
    assert set(got) <= set(answered) and {type(g) for g in got} == {type(answered[0])}
    assert set(body["predictions"][0]["prediction"]["probabilities"]) == set(texts)
    events = read_events(tmp_path / "events")
    assert [e["prediction"]["class"] for e in events] == [texts[answered.index(g)] for g in got]
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert sum(value(m, "mlpulse_predicted_class_total", **{"class": t}) for t in texts) == 40
    assert value(m, "mlpulse_prediction_count") == 40


def test_multiclass_and_regression_and_label_only_models(tmp_path):
    iris = load_iris(as_frame=True).frame
    create_bundle(tmp_path / "iris", fit(iris), iris, "target")
    client = serve(tmp_path / "iris", tmp_path / "a")
    pred = client.post("/v1/predict", json=records(iris, 1)[0]).get_json()["prediction"]
    assert pred["class"] in (0, 1, 2) and pred["value"] == max(pred["probabilities"].values())
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert value(m, "mlpulse_class_probability_count", **{"class": "2"}) == 1
    assert "multiclass model" in client.get("/openapi.json").get_json()["info"]["description"]

    diabetes = load_diabetes(as_frame=True).frame
    create_bundle(tmp_path / "diabetes", fit(diabetes, estimator=LinearRegression()), diabetes, "target")
    client = serve(tmp_path / "diabetes", tmp_path / "b")
    pred = client.post("/v1/predict", json=records(diabetes, 1)[0]).get_json()["prediction"]
    assert set(pred) == {"value"} and isinstance(pred["value"], float)
    reg = load_bundle(tmp_path / "diabetes")
    assert reg.output.kind == "regression" and "predicted_class" not in reg.profile
    assert reg.metadata["metrics"]["r2"] > 0.3

    frame = cancer()
    create_bundle(tmp_path / "ridge", fit(frame, estimator=make_pipeline(SimpleImputer(), RidgeClassifier())),
                  frame, "target")
    client = serve(tmp_path / "ridge", tmp_path / "c")
    body = client.post("/v1/predict", json=records(frame, 10)).get_json()
    assert all(p["prediction"]["value"] is None and p["prediction"]["class"] in (0, 1) for p in body["predictions"])
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert value(m, "mlpulse_prediction_nonfinite_total") == 0  # no score is not a broken score
    assert value(m, "mlpulse_records_total", outcome="scored") == 10
    assert sum(value(m, "mlpulse_predicted_class_total", **{"class": c}) for c in ("0", "1")) == 10
