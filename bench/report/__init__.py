"""The report: report.md and figures/*.png from one or several run folders (build.py; `python -m bench.report`),
with the one figure module (figures.py)."""
