"""Model quality without labels: the estimate (``estimate``) and its live accumulators (``live``)."""
