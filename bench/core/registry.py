"""Registries of what a config can name (jobs, models, metrics, datasets): a name -> "module:object" target,
imported only when that name is used, so `muse-bench --help` or a config error never pays for torch, and adding
an entry is one line beside one new module (as lm-evaluation-harness registers its tasks)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from bench.core.errors import BenchError


class UnknownName(BenchError, KeyError):
    """A name no registry entry has: a BenchError (the command line prints it as one paragraph, naming the config
    key) and a KeyError, so the Mapping methods built on lookup (`get`, ...) behave as for any mapping."""

    def __str__(self) -> str:
        return str(self.args[0])  # not KeyError's repr of the message


class Registry(Mapping[str, Any]):
    """Names -> objects, each given as a "package.module:attribute" target and imported on first lookup.

    `key` is the config key that names an entry (used in the error for an unknown name).
    """

    def __init__(self, key: str, targets: Mapping[str, str]) -> None:
        for name, target in targets.items():
            if target.count(":") != 1:
                raise ValueError(f"registry {key}: target {target!r} of {name!r} is not 'module:object'")
        self.key = key
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def target(self, name: str) -> str:
        """The "module:object" target of `name`, without importing it; an unknown name is a BenchError."""
        if name not in self._targets:
            raise UnknownName(f"Unknown {self.key}={name!r}. Known: {', '.join(self._targets)}.")
        return self._targets[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, attribute = self.target(name).split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)
