"""Metrics, traces and logs: what every layer above util reports through (see metrics.py)."""
