# The suite's entry points. `make demo` and `make test` create .venv with the pinned requirements when it is
# missing (or requirements.txt changed), then do their job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEMO := out/demo
export HF_HUB_OFFLINE ?= 1

.PHONY: demo methods-demo embedded-results test speed clean-venv speed-search reproduce-dolg reproduce-netvlad \
  reproduce-mscfp reproduce-remap tables check regression demo-tables

$(STAMP): requirements.txt
	@echo "== setting up $(VENV): the pinned requirements in one pip command (torch pinned exactly)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	@touch $@

test: $(STAMP)
	$(PY) -m pytest
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory regression

# The main job on the embedded benchmarks, offline, in about 8 minutes on a 2-core laptop CPU: the registered
# plugins; the three embedded benchmarks generated under the data root ($$BENCH_DATA, default
# ~/.cache/image-retrieval-benchmarks) in the real datasets' formats, described and verified; NetVLAD, MSCFP, REMAP
# and DOLG on a real ImageNet trunk that ships with the requirements (EfficientNet-Lite0, --init
# efficientnet_lite0.in1k), each untrained (ImageNet trunk + k-means or KL-divergence weights + PCA-whitening),
# trained for a minute or so on an embedded training split, and on a random trunk of the same kind (--init none,
# the floor a real network must clear), all evaluated on the three benchmarks (results with provenance in
# $(DEMO)/results); then the scoring speed at 1M scale, and the embedded comparison table with its plots.
# `make embedded-results` runs the methods into results/.
# The minute of training differs from the papers' recipes where a minute on 2 cores needs it (README, "The
# embedded benchmarks"): small K and whitening, Adam at 1e-4 (DOLG: SGD at 1e-3), batch norm frozen (batches of
# 8 tuples or 16 crops), and NetVLAD trains the whole trunk (its paper: conv5 only) as synthetic streets are far
# from ImageNet.
DEMO_RESULTS ?= $(DEMO)/results
REAL_TRUNK := --init efficientnet_lite0.in1k
RANDOM_TRUNK := --init none --config backbone=efficientnet_lite0
NETVLAD_DEMO := --config num_clusters=16 --config whiten_dim=128 --set train_from= --set optimizer=adam \
  --set lr=1e-4 --set cache_refresh=40 --set n_sampled_negatives=100 --set cluster_images=100 --set n_negatives=3 \
  --set frozen_batchnorm=true --val-split val
NETVLAD_STEPS := 60
# MSCFP's test squares of 336 x {3/2, 1, 2/3} (white query pad 256) scaled to the embedded images (128 x 96 to
# 320 px): squares of 128 x {3/2, 1, 2/3}, query pad 96 (kept in the checkpoints, recorded in the results).
MSCFP_DEMO := --config subvector_dim=64 --config num_clusters=16 --config whiten_dim=128 --set optimizer=adam \
  --set lr=1e-4 --set mining_classes=20 --set mining_batch=240 --set tuples_per_batch=8 --set cache_refresh=4 \
  --set cluster_images=100 --set frozen_batchnorm=true --protocol max_size=128 --protocol query_pad=96
MSCFP_STEPS := 80
REMAP_DEMO := --config whiten_dim=128 --set optimizer=adam --set lr=1e-4 --set mining_classes=20 --set mining_batch=240 \
  --set tuples_per_batch=8 --set cache_refresh=4 --set cluster_images=100 --set frozen_batchnorm=true
REMAP_STEPS := 40
DOLG_DEMO := --set batch_size=16 --set image_size=96 --set min_crop_area=0.5 --set lr=1e-3 --set frozen_batchnorm=true
DOLG_STEPS := 100
# The embedded benchmarks: every registered generated dataset (benchmarks.reports.tables.embedded_datasets), read when a
# recipe runs, after .venv exists.
EMBEDDED = $(eval EMBEDDED := $(shell $(PY) -c 'from benchmarks.reports.tables import embedded_datasets; \
  print(*embedded_datasets())'))$(EMBEDDED)
# `make demo EVALUATE_FLAGS=--allow-dirty` evaluates although the tree has uncommitted changes (results say so).
EVALUATE_FLAGS ?=

demo: $(STAMP)
	@echo "== registered methods and datasets"
	$(PY) -m benchmarks list
	@for name in $(EMBEDDED); do \
	  echo "== $$name: generate (seconds, once), describe, verify"; \
	  $(PY) -m benchmarks data download $$name && $(PY) -m benchmarks data info $$name && \
	  $(PY) -m benchmarks data verify $$name || exit 1; \
	done
	@$(MAKE) --no-print-directory methods-demo
	@echo "== scoring speed: 70 queries x 1,001,001 ranked database images"
	$(PY) -m benchmarks speed metrics --repeat 1
	@$(MAKE) --no-print-directory demo-tables
	@echo "== done. Results (one JSON per run, with provenance): $(DEMO_RESULTS)/<dataset>/<method>/; checkpoints:"
	@echo "   $(DEMO)/weights/; the comparison table (.md, .tex) and plots (recall_*.png, map_*.png, gallery_*.png):"
	@echo "   $(DEMO)/tables/"

# Each method's three runs, then their evaluation (so the first numbers come after the first method, not the
# last): the ImageNet trunk untrained, a random trunk untrained, the ImageNet trunk trained on its split.
# $(1) method, $(2) training dataset, $(3) steps, $(4) its demo flags.
define DEMO_TRAINING
@echo "== $(1): untrained, random trunk, then trained $(3) steps on $(2) train"
$(PY) -m benchmarks train $(1) --dataset $(2) --steps 0 $(REAL_TRUNK) $(4) \
  --name effl0.untrained --out $(DEMO)/weights/$(1)-untrained.pt
$(PY) -m benchmarks train $(1) --dataset $(2) --steps 0 $(RANDOM_TRUNK) $(4) \
  --name effl0_random.untrained --out $(DEMO)/weights/$(1)-random.pt
$(PY) -m benchmarks train $(1) --dataset $(2) --steps $(3) $(REAL_TRUNK) $(4) \
  --name effl0.$(2) --out $(DEMO)/weights/$(1)-$(2).pt
@echo "== $(1): the three runs evaluated on the three embedded benchmarks"
@for t in untrained random $(2); do $(PY) -m benchmarks evaluate --method $(1) --weights $(DEMO)/weights/$(1)-$$t.pt \
  $(foreach d,$(EMBEDDED),--dataset $(d)) --results $(DEMO_RESULTS) $(EVALUATE_FLAGS) || exit 1; done
endef

methods-demo: $(STAMP)
	@mkdir -p $(DEMO)/weights
	@for name in $(EMBEDDED); do $(PY) -m benchmarks data download $$name >/dev/null || exit 1; done
	$(call DEMO_TRAINING,netvlad,synth_places,$(NETVLAD_STEPS),$(NETVLAD_DEMO))
	$(call DEMO_TRAINING,mscfp,synth_landmarks,$(MSCFP_STEPS),$(MSCFP_DEMO))
	$(call DEMO_TRAINING,remap,synth_landmarks,$(REMAP_STEPS),$(REMAP_DEMO))
	$(call DEMO_TRAINING,dolg,synth_landmarks,$(DOLG_STEPS),$(DOLG_DEMO))

embedded-results:
	@$(MAKE) --no-print-directory methods-demo DEMO_RESULTS=results

speed: $(STAMP)
	$(PY) -m benchmarks speed metrics --json
	$(PY) -m benchmarks speed extract --json

clean-venv:
	rm -rf $(VENV)

# Exact top-k search at the largest published scales (70 x 1M x 512-D; 8280 x 83,952 x 4096-D): minutes on 2 cores.
speed-search: $(STAMP)
	$(PY) -m benchmarks speed search

# DOLG's table: roxford5k and rparis6k (R1M=1 adds the 1M distractors), the released R50 and R101 weights, each
# evaluated with the official multi-scale protocol (results with provenance in results/), then the comparison
# (R1M's archives come over plain http with no published checksum: R1M=1 accepts that and locks their sha256)
# with the reported numbers. Extra flags through REPRODUCE_ARGS (--mirror URL, --weights PATH, --device cuda:1).
reproduce-dolg: $(STAMP)
	$(PY) -m benchmarks reproduce dolg $(if $(filter 1 yes true,$(R1M)),--r1m --allow-insecure-http) $(REPRODUCE_ARGS)
	@if $(PY) -m benchmarks tables --help >/dev/null 2>&1; then $(PY) -m benchmarks tables --paper dolg --print; \
	else echo "== the comparison table needs the tables command, not in this checkout yet"; fi

# NetVLAD's tables from the authors' released models: Pitts30k, Pitts250k, Tokyo 24/7, Oxford5k, Paris6k, Holidays
# (the Pittsburgh and Tokyo images are given out on request: --images, see README). `reproduce netvlad --plan`
# lists the files and the time. Extra flags through REPRODUCE_ARGS.
reproduce-netvlad: $(STAMP)
	$(PY) -m benchmarks reproduce netvlad --plan
	$(PY) -m benchmarks reproduce netvlad $(REPRODUCE_ARGS)

# MSCFP and REMAP publish no weights: the plan, then the paper's recipe from its initialisation on the training data
# the method's `reproduction.training` declares (read from the plugin, not repeated here), then its benchmarks.
# TRAIN_ARGS reaches `train` (--device cuda, --mirror URL); under torchrun, run the train line by hand.
REPRODUCE_DIR ?= out/reproduce
TRAINING_OF = $(PY) -c "import sys; from methods import load_plugins; t = load_plugins().get(sys.argv[1]).reproduction.training; print(f'--dataset {t.dataset} --split {t.split} --steps {t.steps}')"
define REPRODUCE_TRAINED
$(PY) -m benchmarks reproduce $(1) --plan
$(PY) -m benchmarks train $(1) $$($(TRAINING_OF) $(1)) --name $(2) --out $(REPRODUCE_DIR)/$(1)-$(2).pt $(TRAIN_ARGS)
$(PY) -m benchmarks reproduce $(1) --weights $(REPRODUCE_DIR)/$(1)-$(2).pt $(REPRODUCE_ARGS)
endef

reproduce-mscfp: $(STAMP)
	@mkdir -p $(REPRODUCE_DIR)
	$(call REPRODUCE_TRAINED,mscfp,resnet101.gldv2)

reproduce-remap: $(STAMP)
	@mkdir -p $(REPRODUCE_DIR)
	$(call REPRODUCE_TRAINED,remap,resnext101_32x8d.gldv2)

# The demo's last step: the embedded comparison table of its runs (printed, and written with its LaTeX), the
# Recall@N curves and mAP bars, and ranked-list galleries of three trained models, all in $(DEMO)/tables.
demo-tables: $(STAMP)
	@echo "== the embedded benchmarks: our runs side by side ($(DEMO)/tables)"
	$(PY) -m benchmarks tables --results $(DEMO_RESULTS) --out $(DEMO)/tables --benchmark embedded --print
	$(PY) -m benchmarks plot summary --results $(DEMO_RESULTS) --out $(DEMO)/tables
	$(PY) -m benchmarks plot gallery --method mscfp --weights $(DEMO)/weights/mscfp-synth_landmarks.pt \
	  --dataset synth_landmarks --queries 0,5,12 --out $(DEMO)/tables/gallery_synth_landmarks.png
	$(PY) -m benchmarks plot gallery --method netvlad --weights $(DEMO)/weights/netvlad-synth_places.pt \
	  --dataset synth_places --queries 0,1,2 --out $(DEMO)/tables/gallery_synth_places.png
	$(PY) -m benchmarks plot gallery --method dolg --weights $(DEMO)/weights/dolg-synth_landmarks.pt \
	  --dataset photo_landmarks --queries 0,9,21 --out $(DEMO)/tables/gallery_photo_landmarks.png

# Reported and reproduced numbers side by side (paper_tables/*.md, *.tex, numbers.csv) and the summary plots.
tables: $(STAMP)
	$(PY) -m benchmarks tables
	$(PY) -m benchmarks plot summary

# What CI holds the numbers to: reproduced within each reported entry's tolerance, committed tables fresh.
check: $(STAMP)
	$(PY) -m benchmarks check

# Regression of our own numbers: every committed embedded result re-made from scratch (training included, as
# `make embedded-results` made it) into $(REGRESSION_DIR), then held to results/ within
# benchmarks.reports.tables.REGRESSION_TOLERANCE points per metric.
REGRESSION_DIR ?= out/regression
regression: $(STAMP)
	rm -rf $(REGRESSION_DIR)
	@$(MAKE) --no-print-directory methods-demo DEMO=$(REGRESSION_DIR) EVALUATE_FLAGS=--allow-dirty
	$(PY) -m benchmarks check --rerun $(REGRESSION_DIR)/results
