"""Expected errors of the harness: bad configuration, missing or malformed data.

The command line prints these as one paragraph and exits with status 2, without a traceback;
anything else is a bug and keeps its traceback.
"""


class BenchError(Exception):
    """An expected error whose message says what is wrong and what to do about it."""
