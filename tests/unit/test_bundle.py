import json
import shutil

import pytest

from mlpulse.bundle import BundleError, load_bundle, load_reference
from model_service.data import generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES


@pytest.fixture
def copy(bundle_dir, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_bundle_loads_and_scores(bundle_dir):
    b = load_bundle(bundle_dir, trusted=TRUSTED_TYPES)
    proba = b.model.predict_proba(rows_for_model(to_records(generate(20, seed=5))))
    assert proba.shape == (20, 2)
    md = b.metadata
    assert md["libraries"]["scikit-learn"] and md["metrics"]["roc_auc"] > 0.6
    assert [f["name"] for f in md["features"]] == b.schema.names
    assert b.output.classes == ("no_default", "default")


def test_tampered_model_is_refused(copy):
    with open(copy / "model.skops", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy, trusted=TRUSTED_TYPES)


def test_tampered_reference_is_refused(copy):
    ref = json.loads((copy / "reference.json").read_text())
    ref["features"]["age"]["bin_counts"][1] += 1
    (copy / "reference.json").write_text(json.dumps(ref))
    with pytest.raises(BundleError, match="reference.json"):
        load_reference(copy)


def test_untrusted_types_are_refused(bundle_dir):
    with pytest.raises(BundleError, match="not trusted"):
        load_bundle(bundle_dir, trusted=())


def test_missing_and_broken_files_have_clear_errors(copy, tmp_path):
    with pytest.raises(BundleError, match="no metadata.json"):
        load_bundle(tmp_path / "nowhere")
    (copy / "model.skops").unlink()
    with pytest.raises(BundleError, match="no model.skops"):
        load_bundle(copy, trusted=TRUSTED_TYPES)
    (copy / "metadata.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)
