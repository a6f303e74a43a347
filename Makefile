# The suite's entry points. `make demo` and `make test` create .venv with the pinned requirements when it is
# missing (or requirements.txt changed), then do their job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO := out/demo
export HF_HUB_OFFLINE ?= 1

.PHONY: demo methods-demo embedded-results test speed clean-venv

$(STAMP): requirements.txt
	@echo "== setting up $(VENV): the pinned requirements in one pip command (torch pinned exactly)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	@touch $@

test: $(STAMP)
	$(PY) -m pytest

# The main job on the embedded benchmarks, offline, in a few minutes on a laptop CPU: the registered plugins;
# the two benchmarks generated under the data root ($$BENCH_DATA, default ~/.cache/image-retrieval-benchmarks)
# in the real datasets' formats, described and verified; NetVLAD and MSCFP on small random-init ResNet-18
# trunks (no pretrained weights offline), each untrained (k-means + PCA-whitening only) and trained for about
# a minute on an embedded training split, all evaluated on both benchmarks (results with provenance in
# $(DEMO)/results); then the scoring speed at 1M scale. `make embedded-results` runs the same into results/.
DEMO_RESULTS ?= $(DEMO)/results
NETVLAD_DEMO := --config backbone=resnet18 --config feature_index=3 --config drop_final_relu=false \
  --config num_clusters=16 --config whiten_dim=128 --set train_from= --set optimizer=adam --set lr=1e-4 \
  --set cache_refresh=40 --set n_sampled_negatives=100 --set cluster_images=100
NETVLAD_STEPS := 60
MSCFP_DEMO := --config backbone=resnet18 --config subvector_dim=128 --config num_clusters=16 \
  --config whiten_dim=128 --set optimizer=adam --set lr=1e-4 --set mining_classes=20 --set mining_batch=240 \
  --set tuples_per_batch=8 --set cache_refresh=4 --set cluster_images=100
MSCFP_STEPS := 40

demo: $(STAMP)
	@echo "== registered methods and datasets"
	$(PY) -m benchmarks list
	@for name in synth_landmarks synth_places; do \
	  echo "== $$name: generate (seconds, once), describe, verify"; \
	  $(PY) -m benchmarks data download $$name && $(PY) -m benchmarks data info $$name && \
	  $(PY) -m benchmarks data verify $$name || exit 1; \
	done
	@$(MAKE) --no-print-directory methods-demo
	@echo "== scoring speed: 70 queries x 1,001,001 ranked database images"
	$(PY) -m benchmarks speed metrics --repeat 1

methods-demo: $(STAMP)
	@mkdir -p $(DEMO)/weights
	@$(PY) -m benchmarks data download synth_places >/dev/null && $(PY) -m benchmarks data download synth_landmarks >/dev/null
	@echo "== netvlad: untrained, then trained $(NETVLAD_STEPS) steps on synth_places train (about a minute)"
	$(PY) -m benchmarks train netvlad --dataset synth_places --steps 0 $(NETVLAD_DEMO) \
	  --name resnet18.untrained --out $(DEMO)/weights/netvlad-untrained.pt
	$(PY) -m benchmarks train netvlad --dataset synth_places --steps $(NETVLAD_STEPS) $(NETVLAD_DEMO) \
	  --name resnet18.synth_places --out $(DEMO)/weights/netvlad-synth_places.pt
	@echo "== mscfp: untrained, then trained $(MSCFP_STEPS) steps on synth_landmarks train (about a minute)"
	$(PY) -m benchmarks train mscfp --dataset synth_landmarks --steps 0 $(MSCFP_DEMO) \
	  --name resnet18.untrained --out $(DEMO)/weights/mscfp-untrained.pt
	$(PY) -m benchmarks train mscfp --dataset synth_landmarks --steps $(MSCFP_STEPS) $(MSCFP_DEMO) \
	  --name resnet18.synth_landmarks --out $(DEMO)/weights/mscfp-synth_landmarks.pt
	@echo "== evaluation on both embedded benchmarks"
	@for w in netvlad:untrained netvlad:synth_places mscfp:untrained mscfp:synth_landmarks; do \
	  m=$${w%%:*}; t=$${w#*:}; \
	  $(PY) -m benchmarks evaluate --method $$m --weights $(DEMO)/weights/$$m-$$t.pt \
	    --dataset synth_places --dataset synth_landmarks --results $(DEMO_RESULTS) || exit 1; \
	done

embedded-results:
	@$(MAKE) --no-print-directory methods-demo DEMO_RESULTS=results

speed: $(STAMP)
	$(PY) -m benchmarks speed metrics --json
	$(PY) -m benchmarks speed extract --json

clean-venv:
	rm -rf $(VENV)
