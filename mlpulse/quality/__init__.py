"""Model quality: realized once labels arrive (``realized``, scikit-learn's metrics on joined
labels), estimated before they do (``estimate``, and its live accumulators ``live``)."""
