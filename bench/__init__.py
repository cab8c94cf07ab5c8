"""muse-bench: the evaluation and benchmark harness around the `muse` model package."""
