"""Scoring requests: the pipeline from a request to the model and back, and where the model runs."""
