"""The default Alertmanager receiver: appends every notification to a JSON-lines file.

Standard library only, so its image installs nothing. ``python -m alert_webhook --help``.
"""
