"""Scoring: metrics, test sets, per-image and per-snapshot scores, montages, comparison tables."""
