"""Latency: the one timing protocol (timing.py), the measured, extrapolated and per-stage protocols with the
rows, ratios and compute floors they produce (measure.py), and the per-stage protocol's machinery
(stagewise.py)."""
