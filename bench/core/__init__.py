"""The shared core every wing imports and that imports no wing: the typed config schema, expected errors, the
results writer, provenance, run folders, registries and the checkout's paths."""
