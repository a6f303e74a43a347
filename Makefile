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

# The main job on what exists so far: the registered plugins; the two embedded benchmarks, generated offline
# under the data root ($$BENCH_DATA, default ~/.cache/image-retrieval-benchmarks) in the real datasets' formats,
# described and verified; chance-level rankings scored on them with the shared metrics (methods come next);
# then the scoring speed at 1M scale.
demo: $(STAMP)
	@echo "== registered methods and datasets"
	$(PY) -m benchmarks list
	@for name in synth_landmarks synth_places; do \
	  echo "== $$name: generate (seconds, once), describe, verify"; \
	  $(PY) -m benchmarks data download $$name && $(PY) -m benchmarks data info $$name && \
	  $(PY) -m benchmarks data verify $$name || exit 1; \
	done
	@mkdir -p $(DEMO)
	@echo "== chance-level rankings (seed 0) scored on the embedded benchmarks"
	$(PY) -c "import numpy as np; from benchmarks.data_root import data_root; from datasets import load_plugins; \
	d = load_plugins(); r = np.random.default_rng(0); \
	g = d.get('synth_landmarks')().load(data_root()).ground_truth; \
	np.save('$(DEMO)/chance_landmarks.npy', np.stack([r.permutation(g.n_db) for _ in range(g.n_queries)])); \
	p = d.get('synth_places')().load(data_root()).ground_truth; \
	np.save('$(DEMO)/chance_places.npy', np.stack([r.permutation(p.n_db)[:20] for _ in range(p.n_queries)]))"
	root=$$($(PY) -c "from benchmarks.data_root import data_root; print(data_root())"); \
	$(PY) -m benchmarks score revisited --gnd $$root/synth_landmarks/gnd_synth_landmarks.pkl \
	  --ranks $(DEMO)/chance_landmarks.npy && \
	$(PY) -m benchmarks score recall --gt $$root/synth_places/datasets/synth_places_test.mat \
	  --predictions $(DEMO)/chance_places.npy
	@echo "== scoring speed: 70 queries x 1,001,001 ranked database images"
	$(PY) -m benchmarks speed metrics --repeat 1

speed: $(STAMP)
	$(PY) -m benchmarks speed metrics --json

clean-venv:
	rm -rf $(VENV)
