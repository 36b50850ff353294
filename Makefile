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

# The shipped phantom -> CT translation model (about 2 hours on 2 CPU cores, both threads, the machine to itself):
# CT slices of the evaluate-phantom-ct recipe's training patients only, 40 virtual patients' phantoms (seed 0;
# the recipe's arms use other ones, seed 1), then the recipe; generators, judge and card land in
# augmentor/zoo/weights/cyclegan-phantom-ct/. Then its audit on held-out phantoms (seed 1) and CT test patients.
zoo-translation: $(STAMP)
	$(BIN)/augment evaluate evaluate-phantom-ct --export-train cohorts/ct-train.h5 --overwrite
	$(BIN)/augment phantom --n-patients 40 --out cohorts/phantoms-train.h5 --overwrite
	$(BIN)/augment train cyclegan-phantom-ct --data-a cohorts/phantoms-train.h5 --data-b cohorts/ct-train.h5 --out runs/cyclegan-phantom-ct --overwrite
	rm -rf $(ZOO_DIR)/cyclegan-phantom-ct && mkdir -p $(ZOO_DIR)/cyclegan-phantom-ct
	cp -r runs/cyclegan-phantom-ct/model.safetensors runs/cyclegan-phantom-ct/model.json runs/cyclegan-phantom-ct/reverse \
	  runs/cyclegan-phantom-ct/segmenter $(ZOO_DIR)/cyclegan-phantom-ct/
	$(MAKE) audit-translation

audit-translation: $(STAMP)
	$(BIN)/augment phantom --n-patients 10 --seed 1 --out cohorts/phantoms-seed1.h5 --overwrite
	$(BIN)/python -m evaluation.translation_audit --model cyclegan-phantom-ct --phantoms cohorts/phantoms-seed1.h5 \
	  --ct cohorts/abdomen-ct-k48-seed0/test.h5 --out results/translation-cyclegan-phantom-ct.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
