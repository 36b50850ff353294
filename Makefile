# augmentor: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test test-slow bench lint clean zoo zoo-translation audit-translation install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: 60 000 labelled synthetic metastases (image, mask, class,
# provenance) from the shipped frid-adar-liver model, then a look at them.
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/augment generate --class metastasis --n 60000 --out $(DEMO_DIR)/metastasis.h5 --overwrite
	$(BIN)/augment inspect $(DEMO_DIR)/metastasis.h5 --grid $(DEMO_DIR)/metastasis.png

# make reports any failing recipe as its own exit status 2; PYTEST_STATUS=FILE also writes pytest's own
# exit status to FILE (.ci/run tells "no tests collected", pytest's 5, from failures that way).
test: $(STAMP)
	@status=0; $(BIN)/python -m pytest -q -n 2 || status=$$?; \
	if [ -n "$(PYTEST_STATUS)" ]; then echo "$$status" > "$(PYTEST_STATUS)"; fi; \
	exit $$status

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Every benchmark, then one table (figure, target, pass/fail, spread); 11 minutes on 2 idle cores. The
# difficulty calibration runs as its --quick smoke run; BENCH_FULL=1 runs the full one (30 min to hours).
bench: $(STAMP)
	$(BIN)/python bench/all.py $(if $(BENCH_FULL),--full)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy augmentor evaluation cli.py

# Rebuild the shipped models from scratch: the simulator cohorts of the reported seed (0) and of the tuning
# seed (1), the evaluate recipes' training patients only (--export-train: the validation patients that
# early-stop the downstream arms stay unseen), then each recipe, one per core with one thread each (the
# setting the shipped cards record; the same threads reproduce the same bytes). On 2 CPU cores about
# 110 minutes (the lung run, with its monitor checks); with a GPU, minutes. Weights land in augmentor/zoo/weights/<name>/.
ZOO_DIR := augmentor/zoo/weights
zoo: $(STAMP)
	for seed in 0 1; do \
	  $(BIN)/augment cohort liver-lesions --out cohorts/liver-lesions-seed$$seed --seed $$seed --overwrite && \
	  $(BIN)/augment cohort lung-nodules --out cohorts/lung-nodules-seed$$seed --seed $$seed --overwrite || exit 1; \
	done
	$(BIN)/augment evaluate evaluate-liver --export-train cohorts/liver-split-train.h5 --overwrite
	$(BIN)/augment evaluate evaluate-lung --export-train cohorts/lung-split-train.h5 --overwrite
	OMP_NUM_THREADS=1 $(BIN)/augment train frid-adar-liver --data cohorts/liver-split-train.h5 --out runs/frid-adar-liver --overwrite & liver=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/augment train onishi-lung-dcgan --data cohorts/lung-split-train.h5 --out runs/onishi-lung-dcgan --overwrite & lung=$$!; \
	wait $$liver && wait $$lung
	for name in frid-adar-liver onishi-lung-dcgan; do mkdir -p $(ZOO_DIR)/$$name && cp runs/$$name/model.safetensors runs/$$name/model.json $(ZOO_DIR)/$$name/; done

# The shipped phantom -> CT translation models, plain (cyclegan-phantom-ct, ~80 minutes on 2 CPU cores, both
# threads, the machine to itself) and with structure consistency (cyclegan-phantom-ct-structure, ~2 hours): CT
# slices of the evaluate-phantom-ct recipe's training patients only, 40 virtual patients' phantoms (seed 0; the
# recipe's arms use other ones, seed 1), then each recipe; generators, judge and card land in
# augmentor/zoo/weights/<name>/. Then their audits on held-out phantoms (seed 1) and CT test patients.
TRANSLATION_MODELS := cyclegan-phantom-ct cyclegan-phantom-ct-structure
zoo-translation: $(STAMP)
	$(BIN)/augment evaluate evaluate-phantom-ct --export-train cohorts/ct-train.h5 --overwrite
	$(BIN)/augment phantom --n-patients 40 --out cohorts/phantoms-train.h5 --overwrite
	for name in $(TRANSLATION_MODELS); do \
	  $(BIN)/augment train $$name --data-a cohorts/phantoms-train.h5 --data-b cohorts/ct-train.h5 --out runs/$$name --overwrite && \
	  rm -rf $(ZOO_DIR)/$$name && mkdir -p $(ZOO_DIR)/$$name && \
	  cp -r runs/$$name/model.safetensors runs/$$name/model.json runs/$$name/reverse runs/$$name/segmenter $(ZOO_DIR)/$$name/ || exit 1; \
	done
	$(MAKE) audit-translation

audit-translation: $(STAMP)
	$(BIN)/augment phantom --n-patients 10 --seed 1 --out cohorts/phantoms-seed1.h5 --overwrite
	for name in $(TRANSLATION_MODELS); do \
	  $(BIN)/python -m evaluation.translation_audit --model $$name --phantoms cohorts/phantoms-seed1.h5 \
	    --ct cohorts/abdomen-ct-k48-seed0/test.h5 --out results/translation-$$name.json || exit 1; \
	done

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
