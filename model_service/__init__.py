"""The reference model service: synthetic data, training, the Flask app and a traffic generator."""
