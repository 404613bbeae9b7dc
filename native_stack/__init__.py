"""The native stack: the model service, the drift exporter, Prometheus, Alertmanager and the alert
webhook as processes on 127.0.0.1, and the traffic that drives them. ``make demo`` and the
integration tests run the stack through this package, so both run it the same way.

- ``processes``: start, wait for and stop each process;
- ``traffic``: phased traffic (baseline, drift, missing values, invalid records);
- ``demo``: ``make demo``.

It may import the library (``mlpulse``) and the reference service (``model_service``); neither
imports it.
"""
