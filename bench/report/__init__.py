"""The report: report.md and figures/*.png from one or several run folders (`python -m bench.report`, cli.py).

runs.py finds and reads run folders; markdown.py writes numbers, tables and notes; protocols.py says what moves
each number and which rows are not paper numbers; one module per family of sections (overview.py, published.py,
quality.py, latency.py, images.py); document.py assembles report.md; figures.py draws every figure.
"""
