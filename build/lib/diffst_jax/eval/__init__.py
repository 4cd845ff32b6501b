"""Evaluation: full-reference metrics, the space-time SR protocol and built-in baselines."""
