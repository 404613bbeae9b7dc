"""The drift exporter sidecar: tails prediction events, compares them with the reference profile."""
