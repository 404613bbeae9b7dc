"""Named, seeded, composable traffic scenarios: the ways a model goes wrong in production, each with
what it must move (and, by omission, what it must not).

A scenario turns a batch of baseline records (``model_service.data``) into the records of its kind,
or says how the traffic itself changes (its rate, refused records, another model version). A phase
of a schedule (``native_stack.schedule``) plays one or more scenarios at once; their effects add up.

Each record also has its true outcome (``labelled_records_for``), from the synthetic generator
that knows it: a schedule can send it back later as feedback. ``concept_drift`` keeps the inputs
and moves the truth, which only those delayed labels can show.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_service.data import PURPOSE, TARGET, generate, to_records

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    transform: Callable[[Records, np.random.Generator], Records] | None = None
    refused: bool = False  # every record is one the service must refuse
    rate_factor: float = 1.0  # the phase's request rate is multiplied by this
    other_model: bool = False  # the traffic is served by a model version the exporter has no reference for
    service_down: bool = False  # the service is stopped for the phase (and started again after it)
    drifted: frozenset[str] = frozenset()  # input features whose drift it raises
    missing: frozenset[str] = frozenset()  # features whose missing share it raises
    out_of_range: frozenset[str] = frozenset()  # features it sends outside the training range
    alerts: frozenset[str] = frozenset()  # alerts it raises (docs/runbooks.md)
    truth: str = "baseline"  # the model_service.data scenario whose target is the records' true outcome


def _shift_population(records: Records, rng: np.random.Generator) -> Records:
    for r in records:  # older applicants with longer credit histories
        r["age"] = min(90, r["age"] + 12)
        if r["credit_history_years"] is not None:
            r["credit_history_years"] = round(r["credit_history_years"] + 10, 1)
    return records


def _category_mix(records: Records, rng: np.random.Generator) -> Records:
    # Small businesses and medical loans take over the mix; every category is one training saw.
    mix = dict(zip(PURPOSE, [0.1, 0.05, 0.05, 0.05, 0.3, 0.35, 0.05, 0.05], strict=True))
    picks = rng.choice(len(PURPOSE), len(records), p=[mix[p] for p in PURPOSE])
    for r, i in zip(records, picks):
        r["loan_purpose"] = PURPOSE[i]
    return records


def _feature_missing(records: Records, rng: np.random.Generator) -> Records:
    for r, drop in zip(records, rng.random(len(records)) < 0.6):
        if drop:
            r["employment_years"] = None
    return records


def _unit_change(records: Records, rng: np.random.Generator) -> Records:
    for r in records:  # an upstream system starts sending income in thousands
        if r["income"] is not None:
            r["income"] = round(r["income"] / 1000, 4)
    return records


def _out_of_range(records: Records, rng: np.random.Generator) -> Records:
    for r, hit, v in zip(records, rng.random(len(records)) < 0.25, rng.uniform(40, 60, len(records))):
        if hit:  # rates above anything training saw (its maximum is 35)
            r["interest_rate"] = round(float(v), 2)
    return records


def _malformed(records: Records, rng: np.random.Generator) -> Records:
    breakers = [
        lambda r: r.update(age="forty"),  # wrong_type
        lambda r: r.update(unexpected_field=1),  # unknown_field
        lambda r: r.pop("loan_amount"),  # missing_required
        lambda r: r.update(interest_rate=float("nan")),  # non_finite (sent as NaN)
    ]
    for r, brk in zip(records, itertools.cycle(breakers)):
        brk(r)
    return records


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("baseline", "traffic like the training data"),
    Scenario("population_shift", "older applicants with longer credit histories", _shift_population,
             drifted=frozenset({"age", "credit_history_years"}), alerts=frozenset({"FeatureDrift"})),
    Scenario("category_mix", "the loan purposes' mix changes, with no new category", _category_mix,
             drifted=frozenset({"loan_purpose"}), alerts=frozenset({"FeatureDrift"})),
    Scenario("feature_missing", "a feed breaks: employment_years missing in 60 % of records", _feature_missing,
             missing=frozenset({"employment_years"}), alerts=frozenset({"MissingValuesSpike"})),
    Scenario("unit_change", "income arrives in thousands", _unit_change, drifted=frozenset({"income"}),
             out_of_range=frozenset({"income"}), alerts=frozenset({"FeatureDrift", "FeatureOutOfRange"})),
    Scenario("out_of_range", "a quarter of interest rates above the training maximum", _out_of_range,
             drifted=frozenset({"interest_rate"}), out_of_range=frozenset({"interest_rate"}),
             alerts=frozenset({"FeatureDrift", "FeatureOutOfRange"})),
    Scenario("malformed_burst", "a client sends records the service must refuse", _malformed, refused=True,
             alerts=frozenset({"ClientErrorRatioHigh", "InputViolationsSpike"})),
    Scenario("traffic_spike", "five times the request rate, same data", rate_factor=5.0),
    Scenario("wrong_model_version", "another model version is deployed without its reference", other_model=True,
             alerts=frozenset({"ModelVersionChanged", "DriftReferenceMissing"})),
    Scenario("concept_drift", "the inputs stay, what makes an applicant default changes (seen only in labels)",
             truth="concept_drift", alerts=frozenset({"ModelQualityBelowBaseline"})),
    # Its data and drift alerts are inhibited meanwhile (alertmanager/alertmanager.yml).
    Scenario("service_down", "the model service stops", service_down=True, alerts=frozenset({"ModelServiceDown"})),
)}


def records_for(names: tuple[str, ...] | list[str], n: int, seed: int) -> Records:
    """``n`` records with every named scenario applied, in order, to seeded baseline records."""
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
    records = to_records(generate(n, seed=seed))
    rng = np.random.default_rng(seed + 1)
    for name in names:
        transform = SCENARIOS[name].transform
        if transform is not None:
            records = transform(records, rng)
    return records


def labelled_records_for(names: tuple[str, ...] | list[str], n: int, seed: int) -> tuple[Records, list[str]]:
    """``records_for`` and each record's true class (the credit-default model's label text): the
    target of the generator under the last named scenario that moves the truth."""
    truth = next((SCENARIOS[s].truth for s in reversed(list(names)) if SCENARIOS[s].truth != "baseline"),
                 "baseline")
    target = generate(n, seed=seed, scenario=truth)[TARGET]
    return records_for(names, n, seed), ["default" if t else "no_default" for t in target]


def effects(names: tuple[str, ...] | list[str]) -> Scenario:
    """What playing ``names`` together must move: the union of their effects."""
    chosen = [SCENARIOS[n] for n in names]
    union = frozenset().union
    return Scenario("+".join(names), "; ".join(s.description for s in chosen),
                    refused=any(s.refused for s in chosen),
                    rate_factor=float(np.prod([s.rate_factor for s in chosen])),
                    other_model=any(s.other_model for s in chosen),
                    service_down=any(s.service_down for s in chosen),
                    drifted=union(*(s.drifted for s in chosen)), missing=union(*(s.missing for s in chosen)),
                    out_of_range=union(*(s.out_of_range for s in chosen)), alerts=union(*(s.alerts for s in chosen)))
