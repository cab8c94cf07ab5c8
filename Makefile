# The README's set-up commands. `make run` and `make test` each create .venv when it is missing and
# install the package with its test extras (pip installs only what is missing), then run the default
# experiment or the test suite. The install runs once per version of pyproject.toml: its stamp file
# in .venv is named after the file's checksum.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: run test bench install report-example mutants samplers

run: $(STAMP)
	$(BIN)/muse-bench $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks/ --benchmark-only $(ARGS)

install: $(STAMP)

# Mutation testing of the sampler (muse/sampling.py) against tests/test_sampling.py ([tool.mutmut] in
# pyproject.toml); ends with the surviving mutants (tests/MUTANTS.md says why each is equivalent). mutmut is
# installed here only: the suite does not need it. MUTANT_JOBS mutants run at once.
MUTANT_JOBS ?= 2
mutants: $(STAMP)
	$(BIN)/python -m pip install -q 'mutmut>=3.3,<4'
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTANT_JOBS); status=$$?; $(BIN)/mutmut results; exit $$status

# The example report committed in reports/example/: the default job (outputs/example), then its report there.
report-example: $(STAMP)
	rm -rf outputs/example
	$(BIN)/muse-bench hydra.run.dir=outputs/example
	$(BIN)/python -m bench.report outputs/example --out reports/example

# The sampler comparison on the learned world (conf/experiment/shapes_samplers.yaml): steps against FID and judge
# accuracy for each token order, one figure per metric; reruns resume from the samples on disk.
samplers: $(STAMP)
	$(BIN)/muse-bench -m experiment=shapes_samplers hydra.sweep.dir=outputs/samplers $(ARGS)
	$(BIN)/python -m bench.report outputs/samplers --out outputs/samplers/report

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "muse-bench needs Python 3.11 or newer; $(PYTHON) is older. Run e.g. make PYTHON=python3.11 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@
