"""Seeded synthetic credit-default data, with drift scenarios for the traffic generator.

Mixed types on purpose: skewed numbers with outliers, integers, categoricals and nullable
columns, so that every branch of validation, profiling and drift statistics has real work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlpulse.predictor import model_input
from mlpulse.schema import FeatureSchema, FeatureSpec

TARGET = "default"
MARITAL = ("single", "married", "divorced", "widowed")
HOME = ("rent", "own", "mortgage", "other")
PURPOSE = (
    "debt_consolidation",
    "credit_card",
    "home_improvement",
    "car",
    "medical",
    "small_business",
    "education",
    "other",
)

SCHEMA = FeatureSchema(
    (
        FeatureSpec("age", "numeric", "int", minimum=18, maximum=100, description="applicant age, years"),
        FeatureSpec("income", "numeric", "float", nullable=True, minimum=0, maximum=10_000_000,
                    description="annual income, currency units"),
        FeatureSpec("employment_years", "numeric", "float", nullable=True, minimum=0, maximum=60,
                    description="years with current employer"),
        FeatureSpec("loan_amount", "numeric", "float", minimum=100, maximum=1_000_000,
                    description="requested principal"),
        FeatureSpec("loan_term_months", "numeric", "int", minimum=6, maximum=120, description="loan term"),
        FeatureSpec("interest_rate", "numeric", "float", minimum=0, maximum=40, description="annual rate, percent"),
        FeatureSpec("debt_to_income", "numeric", "float", nullable=True, minimum=0, maximum=10,
                    description="monthly debt payments over monthly income"),
        FeatureSpec("credit_history_years", "numeric", "float", minimum=0, maximum=80,
                    description="age of oldest credit line"),
        FeatureSpec("num_open_accounts", "numeric", "int", minimum=0, maximum=100, description="open credit lines"),
        FeatureSpec("num_delinquencies", "numeric", "int", minimum=0, maximum=50,
                    description="delinquencies in the last 7 years"),
        FeatureSpec("credit_utilization", "numeric", "float", minimum=0, maximum=2,
                    description="revolving balance over limit"),
        FeatureSpec("marital_status", "categorical", "str", nullable=True, categories=MARITAL),
        FeatureSpec("home_ownership", "categorical", "str", categories=HOME),
        FeatureSpec("loan_purpose", "categorical", "str", categories=PURPOSE),
    )
)

# What each drift scenario changes, so tests and the demo know which features must drift.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    # An upstream system starts sending income in thousands, and lending moves to riskier loans.
    "drift": ("income", "interest_rate", "credit_utilization", "loan_purpose"),
    # A feed breaks: employment_years mostly missing.
    "missing": ("employment_years",),
    # Concept drift: the same applicants (the inputs of "baseline" for the same seed, value for
    # value), but what makes them default changes (a new lending product, a recession): only
    # labels can show it.
    "concept_drift": (),
}


def generate(n: int, seed: int = 0, scenario: str = "baseline") -> pd.DataFrame:
    """``n`` applicants with the target column; ``scenario`` names a key of SCENARIOS."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {sorted(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    drift = scenario == "drift"
    age = np.clip(rng.normal(42, 12, n), 18, 90).round().astype(int)
    income = rng.lognormal(math.log(55_000), 0.6, n)
    income[rng.random(n) < 0.01] *= 8  # a few very high earners
    if drift:
        income = income / 1000  # unit change upstream
    employment = np.clip(rng.gamma(2.0, 3.5, n), 0, 45).round(1)
    loan_amount = np.clip(rng.lognormal(math.log(12_000), 0.8, n), 500, 500_000).round(2)
    term = rng.choice([12, 24, 36, 48, 60], n, p=[0.1, 0.2, 0.35, 0.15, 0.2])
    rate = np.clip(rng.normal(11 + (5 if drift else 0), 4, n), 2, 35).round(2)
    dti = np.clip(rng.gamma(2.0, 0.12, n), 0, 4)
    dti[rng.random(n) < 0.005] *= 4  # outliers
    history = np.clip(age - 18 - rng.gamma(2.0, 2.0, n), 0, 70).round(1)
    accounts = rng.poisson(6, n)
    delinq = rng.poisson(0.3, n)
    util = rng.beta(2 + (3 if drift else 0), 5, n) * 1.2
    purpose_p = np.array([0.3, 0.2, 0.1, 0.12, 0.06, 0.07, 0.08, 0.07])
    if drift:
        purpose_p = np.array([0.15, 0.1, 0.05, 0.1, 0.1, 0.35, 0.08, 0.07])
    purpose = rng.choice(PURPOSE, n, p=purpose_p)
    marital = rng.choice(MARITAL, n, p=[0.4, 0.42, 0.13, 0.05]).astype(object)
    home = rng.choice(HOME, n, p=[0.38, 0.2, 0.38, 0.04])

    # The target follows the generator's own (undrifted) risk, so drift also costs accuracy.
    true_income = income * (1000 if drift else 1)
    logit = (
        -2.2
        + 2.2 * (dti - 0.24)
        + 0.6 * delinq
        + 0.12 * (rate - 11)
        + 1.5 * (util - 0.34)
        - 0.5 * (np.log(true_income) - math.log(55_000))
        - 0.015 * (age - 42)
        + 0.6 * (purpose == "small_business")
        + 0.25 * (home == "rent")
    )
    if scenario == "concept_drift":  # debt no longer predicts default; long terms and young borrowers do
        logit = (
            -0.4
            - 1.5 * (dti - 0.24)
            + 1.2 * (term >= 48)
            - 0.05 * (age - 42)
            - 0.4 * delinq
        )
    target = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)

    df = pd.DataFrame(
        {
            "age": age,
            "income": income.round(2),
            "employment_years": employment,
            "loan_amount": loan_amount,
            "loan_term_months": term,
            "interest_rate": rate,
            "debt_to_income": dti.round(4),
            "credit_history_years": history,
            "num_open_accounts": accounts,
            "num_delinquencies": delinq,
            "credit_utilization": util.round(4),
            "marital_status": marital,
            "home_ownership": home,
            "loan_purpose": purpose,
            TARGET: target,
        }
    )
    missing_rate = {"income": 0.05, "employment_years": 0.08, "debt_to_income": 0.03, "marital_status": 0.02}
    if scenario == "missing":
        missing_rate["employment_years"] = 0.6
    for col, rate_ in missing_rate.items():
        mask = rng.random(n) < rate_
        df[col] = df[col].astype(object).where(~mask, None)
    return df


def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records of the feature columns: missing as None, numbers as Python numbers."""
    out = []
    cols = SCHEMA.names
    for row in df[cols].itertuples(index=False, name=None):
        rec = {}
        for name, v in zip(cols, row):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                rec[name] = None
            elif isinstance(v, (np.integer,)):
                rec[name] = int(v)
            elif isinstance(v, (np.floating,)):
                rec[name] = float(v)
            else:
                rec[name] = v
        out.append(rec)
    return out


MODEL_INPUT = "codes"  # what the reference model takes (mlpulse.predictor): categories as their codes


def rows_for_model(records: list[dict[str, Any]], schema: FeatureSchema = SCHEMA) -> np.ndarray:
    """The matrix the reference model expects: what the service builds for it."""
    return model_input(records, schema, MODEL_INPUT)


def frame_for_model(records: list[dict[str, Any]], schema: FeatureSchema = SCHEMA) -> pd.DataFrame:
    """The DataFrame the fitted pipeline expects: what the service builds for a bundle whose input
    is ``frame`` (``mlpulse.predictor.model_input``)."""
    return model_input(records, schema, "frame")
