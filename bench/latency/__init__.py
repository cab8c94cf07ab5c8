"""Latency: the one timing protocol (timing.py), the measured, extrapolated and per-stage protocols and the
latency.csv rows they produce (measure.py), the per-stage protocol's machinery (stagewise.py), the ratios
between compared models (ratios.py) and the compute floors on named GPUs (floors.py)."""
