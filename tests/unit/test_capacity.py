"""The capacity model's arithmetic (bench/capacity.py), checked by hand on round inputs; the bench
itself measures the inputs and is not run here."""

from __future__ import annotations

import math

import pytest

from bench.capacity import (
    ES_RATIO,
    MIN_REPLICAS,
    PROM_RAM_HEADROOM,
    UTILISATION,
    Inputs,
    by_dims,
    capacity_row,
    capacity_table,
    families_of,
    model_labelled,
    per_slot_window,
    slope,
    split_series,
)

INPUTS = Inputs(service_series_fixed=500, service_series_per_worker=4, exporter_series_fixed=40,
                exporter_series_per_model=700, bytes_per_event=700, worker_rps=100, exporter_cpu_per_kevents=0.03,
                exporter_eval_cpu_per_model=0.2, evaluate_every=10, windows=3, prom_bytes_per_series=3000,
                prom_cpu_per_ksamples=0.005, workers_per_replica=2, scrape_interval=15)


def test_one_model_at_low_rate_gets_the_minimum_replicas():
    row = capacity_row(INPUTS, 1, 100)
    # 100 req/s over 100 x 0.6 per worker needs 2 workers; the minimum is 2 replicas of 2 workers
    assert row["workers"] == 2 * MIN_REPLICAS and row["replicas"] == MIN_REPLICAS
    assert row["service_series"] == MIN_REPLICAS * (500 + 2 * 4)
    assert row["exporters"] == 1
    assert row["exporter_series"] == 40 + 700
    assert row["series"] == row["service_series"] + row["exporter_series"]
    assert row["samples_per_s"] == pytest.approx(row["series"] / 15)
    assert row["prometheus_ram_bytes"] == pytest.approx(row["series"] * 3000)
    assert row["prometheus_cores"] == pytest.approx(row["samples_per_s"] / 1000 * 0.005)
    assert row["prometheus_disk_bytes_per_day"] == pytest.approx(row["samples_per_s"] * 2 * 86_400)
    assert row["event_bytes_per_day"] == pytest.approx(100 * 700 * 86_400)
    assert row["es_bytes_per_day_low"] == pytest.approx(row["event_bytes_per_day"] * ES_RATIO[0] * 2)
    assert row["es_bytes_per_day_high"] == pytest.approx(row["event_bytes_per_day"] * ES_RATIO[1] * 2)
    assert row["exporter_cores"] == pytest.approx(0.1 * 0.03 + 0.2 / 10)
    assert row["es_searches_per_s"] == pytest.approx(3 / 10)


def test_high_rate_scales_workers_with_the_planned_utilisation():
    row = capacity_row(INPUTS, 10, 10_000)
    workers_per_model = math.ceil(1000 / (100 * UTILISATION))  # 17
    assert row["workers"] == 10 * 2 * math.ceil(workers_per_model / 2)
    assert row["replicas"] == 10 * 9
    cores = 10 * 0.03 + 10 * 0.2 / 10
    assert row["exporter_cores"] == pytest.approx(cores)
    assert row["exporters"] == math.ceil(cores / UTILISATION)
    assert row["exporter_series"] == row["exporters"] * 40 + 10 * 700


def test_prometheus_shards_follow_the_larger_of_ram_and_cpu():
    big = capacity_row(Inputs(**{**INPUTS.__dict__, "prom_bytes_per_series": 1e6}), 100, 10_000)
    assert big["prometheus_shards"] == math.ceil(big["prometheus_ram_bytes"] * PROM_RAM_HEADROOM / (16 * 2**30))
    assert capacity_row(INPUTS, 1, 100)["prometheus_shards"] == 1


def test_the_table_covers_every_size():
    table = capacity_table(INPUTS)
    assert [(r["models"], r["rps"]) for r in table] == [(m, r) for m in (1, 10, 100) for r in (100.0, 10_000.0)]
    assert all(a["series"] <= b["series"] for a, b in zip(table[::2], table[1::2]))


def test_slope_is_least_squares():
    assert slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2)
    assert slope([0, 1, 2, 3], [1, 1, 3, 3]) == pytest.approx(0.8)


def test_series_are_split_by_the_labels_that_scale():
    text = """# TYPE m_drift gauge
m_drift{model="a",feature="x",window="5m"} 1
m_drift{model="a",feature="y",window="5m"} 1
m_drift{model="a",feature="x",window="1h"} 1
m_drift{model="a",feature="y",window="1h"} 1
# TYPE m_h histogram
m_h_bucket{le="1.0"} 1
m_h_bucket{le="+Inf"} 1
m_h_sum 1
m_h_count 1
# TYPE m_up gauge
m_up 1
"""
    split = split_series(families_of(text))
    assert split["m_drift"]["dims"] == ["feature", "window"]
    assert split["m_drift"]["distinct"] == {"feature": 2, "window": 2}
    assert split["m_drift"]["cells"] == 4 and split["m_drift"]["per_cell"] == 1
    assert split["m_h"]["series"] == 4 and split["m_h"]["distinct"] == {"le": 2}
    assert split["m_up"]["dims"] == [] and split["m_up"]["cells"] == 1
    assert by_dims(split) == {"feature+window": 4, "fixed": 1, "le": 4}


def test_exporter_series_per_slot_and_window_by_kind():
    fams = {
        "mlpulse_drift_out_of_range_ratio": [{"feature": "x", "window": w} for w in ("5m", "1h")],
        "mlpulse_drift_unseen_ratio": [{"feature": "c", "window": w} for w in ("5m", "1h")],
        "mlpulse_drift_score": [{"feature": f, "window": w, "statistic": s}
                                for f, stats in (("x", ("psi", "ks")), ("c", ("psi",))) for w in ("5m", "1h")
                                for s in stats],
        "mlpulse_window_predictions": [{"window": "5m"}, {"window": "1h"}],
    }
    got = per_slot_window(fams)
    assert got["numeric"] == {"slots": 1, "series_per_slot_window": 3.0}  # out-of-range + 2 scores
    assert got["categorical"] == {"slots": 1, "series_per_slot_window": 2.0}  # unseen + 1 score


def test_model_labelled_counts_the_families_with_a_model_label():
    fams = families_of("""# TYPE m_http counter
m_http_total{route="/v1/predict",status="200"} 3
# TYPE m_records counter
m_records_total{model="a",version="1",outcome="scored"} 3
m_records_total{model="a",version="1",outcome="refused"} 0
# TYPE m_proc gauge
m_proc{pid="1"} 1
""")
    assert model_labelled(fams) == 2
