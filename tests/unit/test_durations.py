"""mlpulse.durations: the one duration grammar of the exporter, the native configs and the rules."""

from __future__ import annotations

import pytest

from mlpulse.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("5m", 300), ("1h", 3600), ("24h", 86400), ("1d", 86400), ("2w", 1209600), ("1y", 31536000),
    ("1m30s", 90), ("1h5m10s", 3910), ("500ms", 0.5), ("1s500ms", 1.5), ("0", 0), (" 15s ", 15),
])
def test_prometheus_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(text, prometheus=True) == seconds


@pytest.mark.parametrize(("text", "seconds"), [("1.5h", 5400), ("30", 30), ("2.5", 2.5), (45, 45.0), (0.25, 0.25)])
def test_the_exporter_also_takes_decimals_and_bare_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1.5h", "30", "2.5"])
def test_prometheus_mode_refuses_what_prometheus_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text, prometheus=True)


@pytest.mark.parametrize("text", ["", "s", "10", "10x", "m5", "5m 3s", "-5s", "1h-", "ten seconds", "1e3s", "True"])
def test_nonsense_is_refused_naming_the_text(text):
    if text == "10":  # a bare number is seconds for the exporter, refused only in Prometheus mode
        with pytest.raises(ValueError):
            parse_duration(text, prometheus=True)
        return
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_a_boolean_is_not_a_number_of_seconds():
    with pytest.raises(ValueError):
        parse_duration(True)


@pytest.mark.parametrize(("seconds", "label"), [(300, "5m"), (3600, "1h"), (86400, "24h"), (20, "20s"), (90, "90s"),
                                                 (0.5, "0.5s"), (5400, "90m")])
def test_format_gives_the_window_label(seconds, label):
    assert format_duration(seconds) == label
    assert parse_duration(label) == seconds
