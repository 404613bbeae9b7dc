"""Realized quality: the exporter's join of feedback onto predictions, and its metrics against
scikit-learn's functions on the same joined records, across label delays, duplicates, updates and
out-of-order arrival; windows below min_labels absent; bounded memory; restart from the checkpoint."""

import datetime as dt
import json

import numpy as np
import pytest
from prometheus_client import generate_latest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from mlpulse.bundle import load_bundle, read_metadata
from mlpulse.exporter.config import ConfigError, ExporterConfig
from mlpulse.quality.realized import realized
from mlpulse.schema import OutputSpec
from model_service.data import generate, rows_for_model, to_records
from model_service.train import TRUSTED_TYPES
from tests.helpers import samples
from tests.unit.test_exporter import NOW, exporter_for

KEYS = ("default", "no_default")  # the bundle's class_keys order is sorted by the model


def iso(ts):
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@pytest.fixture(scope="module")
def served(bundle_dir):
    """2000 predictions by the real model with their true labels."""
    bundle = load_bundle(bundle_dir, trusted=TRUSTED_TYPES)
    df = generate(2000, seed=11)
    records = to_records(df)
    proba = bundle.model.predict_proba(rows_for_model(records))
    cols = [list(bundle.model.classes_).index(k) for k in bundle.output.class_keys]
    proba = proba[:, cols]
    keys = bundle.output.class_keys
    pos = keys.index("default")
    truth = ["default" if t else "no_default" for t in df["default"]]
    return bundle.output, keys, proba, pos, truth


def prediction(i, ts, keys, proba, pos, rid=None):
    p = proba[i]
    return {"event": "prediction", "@timestamp": iso(ts), "request_id": rid or f"r{i // 5}", "record_index": i % 5,
            "model": {"name": "credit-default", "version": "1.0.0"},
            "inputs": {}, "prediction": {"value": float(p[pos]), "class": "default" if p[pos] >= 0.5 else "no_default",
                                         "probabilities": dict(zip(keys, map(float, p)))}}


def feedback(i, ts, label, predicted_at, rid=None):
    return {"event": "feedback", "@timestamp": iso(ts), "request_id": "fb",
            "model": {"name": "credit-default", "version": "1.0.0"},
            "feedback": {"request_id": rid or f"r{i // 5}", "record_index": i % 5, "label": label,
                         "outcome": "new", "predicted_at": iso(predicted_at)}}


def exporter(bundle_dir, tmp_path, **kw):
    return exporter_for(bundle_dir, tmp_path, quality_windows="5m,1h", feedback_horizon="2h", **kw)


def realized_series(exp, window):
    m = samples(generate_latest(exp.registry()).decode())
    return {(dict(lab)["metric"], dict(lab)["class"]): v for (name, lab), v in m.items()
            if name == "mlpulse_quality_realized" and dict(lab)["window"] == window}, m


def sklearn_metrics(truth, proba, keys, pos):
    """Every realized metric straight from scikit-learn (and the ECE written out) on raw arrays."""
    y = np.array(truth)
    p_pos = proba[:, pos]
    pred = np.where(p_pos >= 0.5, "default", "no_default")
    out = {("accuracy", ""): skm.accuracy_score(y, pred)}
    for k in keys:
        out[("precision", k)] = skm.precision_score(y, pred, pos_label=k)
        out[("recall", k)] = skm.recall_score(y, pred, pos_label=k)
        out[("f1", k)] = skm.f1_score(y, pred, pos_label=k)
    hit = (y == "default").astype(int)
    out[("roc_auc", "")] = skm.roc_auc_score(hit, p_pos)
    out[("brier", "")] = skm.brier_score_loss(hit, p_pos)
    out[("log_loss", "")] = skm.log_loss(hit, p_pos)
    prob_true, prob_pred = calibration_curve(hit, p_pos, n_bins=10)
    bins = np.minimum((p_pos * 10).astype(int), 9)
    weights = np.bincount(bins, minlength=10)
    # Written out independently: the share of records in each non-empty bin times its gap.
    out[("calibration_error", "")] = sum(weights[b] / len(y) * abs(hit[bins == b].mean() - p_pos[bins == b].mean())
                                         for b in range(10) if weights[b])
    assert len(prob_true) == np.count_nonzero(weights)
    return out


def test_join_equals_scikit_learn_across_delays_duplicates_updates_and_disorder(bundle_dir, tmp_path, served):
    output, keys, proba, pos, truth = served
    exp = exporter(bundle_dir, tmp_path, min_labels=50)
    rng = np.random.default_rng(3)
    n = 1500
    pred_ts = NOW - 3000 + np.arange(n) * 2.0  # 50 minutes of predictions
    preds = [prediction(i, pred_ts[i], keys, proba, pos) for i in range(n)]
    labelled = rng.random(n) < 0.7
    final, corrected = {}, set()
    fbs = []
    for i in map(int, np.flatnonzero(labelled)):
        delay = float(rng.exponential(120))
        wrong = "no_default" if truth[i] == "default" else "default"
        if rng.random() < 0.1:  # a wrong label first, corrected later: an update
            fbs.append(feedback(i, pred_ts[i] + delay, wrong, pred_ts[i]))
            corrected.add(i)
            delay += 30
        fbs.append(feedback(i, pred_ts[i] + delay, truth[i], pred_ts[i]))
        if rng.random() < 0.2:  # the same label again
            fbs.append(feedback(i, pred_ts[i] + delay + 5, truth[i], pred_ts[i]))
        final[i] = truth[i]
    # Out of order: the labels of a fifth of the records are read before their prediction (a record's
    # own labels keep their order, as the event log keeps the order of calls).
    first = {i for i in final if rng.random() < 0.2}
    early = [f for f in fbs if f["feedback"]["request_id"] + f":{f['feedback']['record_index']}" in
             {f"r{i // 5}:{i % 5}" for i in first}]
    late = [f for f in fbs if f not in early]
    stream = early + preds + late
    for k in range(0, len(stream), 997):  # poll batches
        exp.source.ingest(stream[k:k + 997], now=NOW)
    exp.evaluate(NOW)
    for window, span in (("5m", 300), ("1h", 3600)):
        got, m = realized_series(exp, window)
        chosen = [i for i in final if pred_ts[i] > NOW - span]
        want = sklearn_metrics([final[i] for i in chosen], proba[chosen], keys, pos)
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (window, k)
        lab = {"model": "credit-default", "version": "1.0.0", "window": window}
        assert m[("mlpulse_quality_labelled", frozenset(lab.items()))] == len(chosen)
        held = sum(1 for t in pred_ts if t > NOW - span)
        assert m[("mlpulse_quality_labelled_ratio", frozenset(lab.items()))] == pytest.approx(len(chosen) / held)
    events = {dict(lab)["outcome"]: v for (name, lab), v in m.items() if name == "mlpulse_exporter_feedback_events_total"}
    assert events["joined"] == len(final)
    # A correction read after its prediction is an update; one read before it replaces the held label.
    assert events["updated"] == len(corrected - first) > 0 and events["duplicate"] > 0
    count = m[("mlpulse_label_delay_seconds_count", frozenset({("model", "credit-default"), ("version", "1.0.0")}))]
    assert count == len(final)


def test_a_window_below_min_labels_has_no_score_but_its_counts(bundle_dir, tmp_path, served):
    output, keys, proba, pos, truth = served
    exp = exporter(bundle_dir, tmp_path, min_labels=100)
    events = [prediction(i, NOW - 10, keys, proba, pos) for i in range(200)]
    events += [feedback(i, NOW - 5, truth[i], NOW - 10) for i in range(99)]
    exp.source.ingest(events, now=NOW)
    exp.evaluate(NOW)
    got, m = realized_series(exp, "5m")
    assert got == {}
    lab = frozenset({("model", "credit-default"), ("version", "1.0.0"), ("window", "5m")})
    assert m[("mlpulse_quality_labelled", lab)] == 99 and m[("mlpulse_quality_labelled_ratio", lab)] == 99 / 200
    exp.source.ingest([feedback(99, NOW - 5, truth[99], NOW - 10)], now=NOW)
    exp.evaluate(NOW)
    assert realized_series(exp, "5m")[0][("accuracy", "")] > 0


def test_the_baseline_is_the_holdout_computed_the_same_way(bundle_dir, tmp_path):
    baseline = read_metadata(bundle_dir)["quality_baseline"]
    assert {b["metric"] for b in baseline} == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier",
                                               "calibration_error"}
    assert {b["class"] for b in baseline if b["metric"] == "f1"} == set(KEYS)
    exp = exporter(bundle_dir, tmp_path)
    exp.evaluate(NOW)
    m = samples(generate_latest(exp.registry()).decode())
    got = {(dict(lab)["metric"], dict(lab)["class"]): v for (name, lab), v in m.items()
           if name == "mlpulse_quality_baseline"}
    assert got == {(b["metric"], b["class"]): b["value"] for b in baseline}
    assert 0.6 < got[("roc_auc", "")] < 1


def test_memory_is_bounded_and_evictions_are_counted(bundle_dir, tmp_path, served):
    output, keys, proba, pos, truth = served
    exp = exporter(bundle_dir, tmp_path, feedback_max_predictions=100, feedback_max_pending=10, min_labels=1)
    exp.source.ingest([prediction(i, NOW - 100 + i * 0.01, keys, proba, pos) for i in range(300)], now=NOW)
    # Labels of predictions not read yet (made after the newest held one): pending, at most 10.
    exp.source.ingest([feedback(i, NOW - 1, truth[i], NOW - 2) for i in range(1000, 1030)], now=NOW)
    exp.source.ingest([feedback(0, NOW - 1, truth[0], NOW - 100)], now=NOW)  # its prediction was evicted
    join = exp.join
    assert len(join.held) == 100 and len(join.pending) == 10
    assert join.evicted[("prediction", "cap")] == 200 and join.evicted[("pending", "cap")] == 20
    assert join.outcomes["prediction_gone"] == 1
    exp.evaluate(NOW + 3 * 3600)  # beyond the horizon: everything expires
    assert len(join.held) == 0 and len(join.pending) == 0 and join.evicted[("prediction", "horizon")] == 100


def test_the_join_survives_a_restart_from_the_checkpoint(bundle_dir, tmp_path, served):
    output, keys, proba, pos, truth = served
    ckpt = str(tmp_path / "ckpt.json")
    exp = exporter(bundle_dir, tmp_path, checkpoint=ckpt, min_labels=10)
    exp.source.ingest([prediction(i, NOW - 60, keys, proba, pos) for i in range(100)], now=NOW)
    exp.source.ingest([feedback(i, NOW - 30, truth[i], NOW - 60) for i in range(50)]
                      + [feedback(200, NOW - 30, "default", NOW - 60)], now=NOW)
    exp.save_checkpoint()
    exp.evaluate(NOW)
    before, _ = realized_series(exp, "5m")
    exp.close()
    again = exporter(bundle_dir, tmp_path, checkpoint=ckpt, min_labels=10)
    again.evaluate(NOW)
    assert realized_series(again, "5m")[0] == before
    assert len(again.join.pending) == 1 and again.join.outcomes == exp.join.outcomes
    # Labels after the restart join the predictions read before it.
    again.source.ingest([feedback(i, NOW - 20, truth[i], NOW - 60) for i in range(50, 100)], now=NOW)
    again.evaluate(NOW)
    got, _ = realized_series(again, "5m")
    assert got[("accuracy", "")] == pytest.approx(skm.accuracy_score(
        truth[:100], np.where(proba[:100, pos] >= 0.5, "default", "no_default")))


def test_regression_metrics_equal_scikit_learn():
    out = OutputSpec(task="regression")
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=500), rng.normal(size=500)
    got = {m: v for m, _c, v in realized(out, y, p)}
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert got["bias"] == pytest.approx(np.mean(p - y))


def test_multiclass_metrics_equal_scikit_learn():
    out = OutputSpec(task="classification", classes=("b", "a", "c"))
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([1, 1, 1], size=400)  # columns in class_keys order
    keys = list(out.class_keys)
    y = [keys[i] for i in rng.integers(0, 3, 400)]
    pred = [keys[i] for i in proba.argmax(1)]
    got = {(m, c): v for m, c, v in realized(out, y, pred, proba)}
    order = np.argsort(keys)
    assert got[("log_loss", "")] == pytest.approx(skm.log_loss(y, proba[:, order]))
    assert got[("roc_auc", "")] == pytest.approx(skm.roc_auc_score(y, proba[:, order], multi_class="ovr"))
    assert got[("recall", "c")] == pytest.approx(skm.recall_score(y, pred, labels=["c"], average=None)[0])
    assert ("brier", "") not in got


def test_quality_options_are_checked():
    with pytest.raises(ConfigError, match="feedback_horizon"):
        ExporterConfig(quality_windows="7d", feedback_horizon="1d")._validate_quality()
    json.dumps(ExporterConfig().quality_window_seconds())


def test_a_regressor_is_joined_and_scored_like_scikit_learn():
    from mlpulse.exporter.quality import Join

    join = Join([300.0], min_labels=10, horizon=3600, max_predictions=1000, max_pending=10)
    join.track("price", "2", OutputSpec(task="regression"), {})
    rng = np.random.default_rng(4)
    y, p = rng.normal(100, 10, 50), rng.normal(100, 10, 50)
    events = [{"event": "prediction", "@timestamp": iso(NOW - 60), "request_id": f"q{i}", "record_index": 0,
               "model": {"name": "price", "version": "2"}, "prediction": {"value": float(p[i])}} for i in range(50)]
    events += [{"event": "feedback", "@timestamp": iso(NOW - 30), "model": {"name": "price", "version": "2"},
                "feedback": {"request_id": f"q{i}", "record_index": 0, "label": repr(float(y[i])),
                             "value": float(y[i])}} for i in range(50)]
    join.ingest(events, lambda e: dt.datetime.fromisoformat(e["@timestamp"]).timestamp())
    join.evaluate(NOW, lambda w: "5m")
    got = {lab["metric"]: v for name, lab, v in join.results if name == "mlpulse_quality_realized"}
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert got["bias"] == pytest.approx(np.mean(p - y))


def test_an_old_bundle_without_a_baseline_still_loads(bundle_dir, tmp_path, served, caplog):
    import shutil

    old = tmp_path / "old-bundle"
    shutil.copytree(bundle_dir, old)
    md = json.loads((old / "metadata.json").read_text())
    del md["quality_baseline"]
    (old / "metadata.json").write_text(json.dumps(md))
    output, keys, proba, pos, truth = served
    with caplog.at_level("INFO"):
        exp = exporter(old, tmp_path, min_labels=10)
    assert sum("no quality_baseline" in r.message for r in caplog.records) == 1
    exp.source.ingest([prediction(i, NOW - 10, keys, proba, pos) for i in range(20)]
                      + [feedback(i, NOW - 5, truth[i], NOW - 10) for i in range(20)], now=NOW)
    exp.evaluate(NOW)
    got, m = realized_series(exp, "5m")
    assert got and not any(name == "mlpulse_quality_baseline" for name, _ in m)


@pytest.mark.parametrize("cap", [10 ** 6, 1500])
def test_window_counts_and_labels_equal_a_scan_of_every_held_prediction(cap):
    """``Join.in_windows`` counts each window's predictions from the versions' time arrays and walks
    only the labelled records; each (version, window) must get what scanning every held prediction
    for it gives: those made after the window's start, and the labelled ones among them. Predictions
    arrive out of order, request ids are used again, labels come before and after their
    predictions, the cap evicts (``cap`` 1500) and the horizon expires, in batches through both the
    clean and the event-at-a-time paths."""
    from mlpulse.exporter.quality import Join

    rng = np.random.default_rng(5)
    join = Join([300, 3600, 86400], min_labels=1, horizon=2 * 86400, max_predictions=cap, max_pending=100)
    keys = [("a", "1"), ("a", "2"), ("b", "1")]
    for name, version in keys:
        join.track(name, version, OutputSpec(task="regression"), {})
    now = 1e9
    # three days, and a busy last ten minutes so that every (version, 5m window) holds some
    stamps = np.sort(np.r_[rng.uniform(now - 3 * 86400, now, 5000), rng.uniform(now - 600, now, 1000)])
    stamps += rng.normal(0, 20, len(stamps))
    events = []
    for i, ts in enumerate(stamps):
        name, version = keys[int(rng.integers(3))]
        rid = f"r{i}" if rng.random() > 0.05 else f"r{int(rng.integers(i + 1))}"
        events.append({"event": "prediction", "@timestamp": iso(ts), "model": {"name": name, "version": version},
                       "request_id": rid, "record_index": 0, "prediction": {"value": float(rng.random())}})
        if rng.random() < 0.3:  # its label, now or a little before
            fb = {"event": "feedback", "@timestamp": iso(ts + 1), "model": {"name": name, "version": version},
                  "feedback": {"request_id": rid, "record_index": 0, "label": "0.5"}}
            events.insert(len(events) - (rng.random() < 0.2), fb)

    def parse(e):
        return dt.datetime.fromisoformat(e["@timestamp"]).timestamp()

    for k in range(0, len(events), 500):
        join.ingest(events[k:k + 500], parse)
    join.expire(now)

    def scan(key, since):
        entries = [e for e in join.held.values() if e[1] == key and e[0] > since]
        return len(entries), [e for e in entries if e[3] is not None]

    got = join.in_windows(now)
    assert join.evicted[("prediction", "cap" if cap < len(stamps) else "horizon")] > 0, join.evicted
    for key in keys:
        for w, (n, labelled) in zip(join.windows, got[key]):
            want_n, want_labelled = scan(key, now - w)
            assert n == want_n and n > 0
            assert sorted(labelled) == sorted(want_labelled) and labelled
        times = join.times[key]
        assert np.count_nonzero(~np.isnan(times.buf[times.lo:times.size])) == sum(e[1] == key for e in join.held.values())
    assert set(join.labelled) == {r for r, e in join.held.items() if e[3] is not None}


def test_a_request_id_used_again_and_again_leaves_no_growing_holes():
    """One old prediction stays held while every later one reuses a single request id: each reuse
    leaves a hole in the version's time array, which is renumbered once the holes outnumber the
    records, so the array stays bounded and the window counts stay those of a scan."""
    from mlpulse.exporter.quality import Join

    join = Join([300, 3600], min_labels=1, horizon=86400, max_predictions=1000, max_pending=10)
    join.track("a", "1", OutputSpec(task="regression"), {})
    now = 1e9

    def event(rid, ts):
        return {"event": "prediction", "@timestamp": iso(ts), "model": {"name": "a", "version": "1"},
                "request_id": rid, "record_index": 0, "prediction": {"value": 0.5}}

    def parse(e):
        return dt.datetime.fromisoformat(e["@timestamp"]).timestamp()

    join.ingest([event("old", now - 3000)], parse)
    for k in range(5000):  # one at a time (a run of one), and in runs that reuse it once each
        join.ingest([event("again", now - 200 + k * 0.01)], parse)
    times = join.times[("a", "1")]
    assert len(join.held) == 2 and times.live == 2
    assert times.size - times.lo <= 2 * 1024 + 2, (times.lo, times.size)
    assert [n for n, _ in join.in_windows(now)[("a", "1")]] == [1, 2]


def test_a_state_restored_under_smaller_caps_keeps_the_newest_and_counts_the_rest():
    """An operator lowers feedback_max_predictions / feedback_max_pending and restarts: the restored
    join keeps the newest records within the new caps, counts the others as cap evictions, and
    then holds new predictions the same way on the clean and the one-by-one paths. A state with an
    unreadable time (an integer no float holds) is refused whole: the join starts empty."""
    from mlpulse.exporter.quality import Join

    def join(cap, pending):
        j = Join([300, 3600], min_labels=1, horizon=86400, max_predictions=cap, max_pending=pending)
        j.track("a", "1", OutputSpec(task="regression"), {})
        return j

    def event(rid, ts):
        return {"event": "prediction", "@timestamp": iso(ts), "model": {"name": "a", "version": "1"},
                "request_id": rid, "record_index": 0, "prediction": {"value": 0.5}}

    def parse(e):
        return dt.datetime.fromisoformat(e["@timestamp"]).timestamp()

    now = 1e9
    big = join(50, 20)
    big.ingest([event(f"r{i}", now - 100 + i) for i in range(50)], parse)
    big.ingest([{"event": "feedback", "@timestamp": iso(now), "model": {"name": "a", "version": "1"},
                 "feedback": {"request_id": f"later{i}", "record_index": 0, "label": "1"}} for i in range(20)], parse)
    state = big.state()
    restored = {}
    for name, clean in (("clean", True), ("one by one", False)):
        j = join(10, 5)
        j.restore(json.loads(json.dumps(state)))
        assert [r for r, _ in j.held.items()] == [(f"r{i}", 0) for i in range(40, 50)]
        assert len(j.pending) == 5 and j.evicted[("prediction", "cap")] == 40 and j.evicted[("pending", "cap")] == 15
        if not clean:
            j._hold_clean = lambda *a: False
        j.ingest([event(f"n{i}", now - 10 + i) for i in range(3)], parse)
        restored[name] = ([(r, e[:5]) for r, e in j.held.items()], dict(j.evicted), j.times[("a", "1")].live)
    assert restored["clean"] == restored["one by one"] and restored["clean"][2] == 10

    state["held"][0][2] = 10 ** 400
    j = join(10, 5)
    j.restore(json.loads(json.dumps(state)))
    assert len(j.held) == 0 and len(j.pending) == 0 and j.times[("a", "1")].live == 0
