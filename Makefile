# The suite's entry points. `make demo` and `make test` create .venv with the pinned requirements when it is
# missing (or requirements.txt changed), then do their job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO := out/demo
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test speed clean-venv

$(STAMP): requirements.txt
	@echo "== setting up $(VENV): the pinned requirements in one pip command (torch pinned exactly)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	@touch $@

test: $(STAMP)
	$(PY) -m pytest

# The main job on what exists so far: the registered plugins, then the shared evaluator scoring a
# chance-level ranking on the real Revisited Oxford ground truth, then the scoring speed at 1M scale.
demo: $(STAMP)
	@echo "== registered methods and datasets"
	$(PY) -m benchmarks list
	@echo "== scoring a chance-level ranking (seed 0) against the real Revisited Oxford5k ground truth"
	@mkdir -p $(DEMO)
	$(PY) -c "import numpy as np; g = np.random.default_rng(0); \
	np.save('$(DEMO)/chance_roxford5k.npy', np.stack([g.permutation(4993) for _ in range(70)]))"
	$(PY) -m benchmarks score revisited --gnd tests/data/revisitop/gnd_roxford5k.pkl --ranks $(DEMO)/chance_roxford5k.npy
	@echo "== scoring speed: 70 queries x 1,001,001 ranked database images"
	$(PY) -m benchmarks speed metrics --repeat 1

speed: $(STAMP)
	$(PY) -m benchmarks speed metrics --json

clean-venv:
	rm -rf $(VENV)
