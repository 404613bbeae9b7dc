"""mlpulse: monitoring for machine-learning models served over HTTP."""

__version__ = "0.1.0"
