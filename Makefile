# augmentor: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test test-slow bench lint clean zoo install

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

# Rebuild the shipped models from scratch: simulator cohorts (train split only), then each recipe.
# On 2 CPU cores (one model per core) this takes about two hours (the liver model is the long one); with a GPU, minutes. Weights land in augmentor/zoo/weights/<name>/.
ZOO_DIR := augmentor/zoo/weights
zoo: $(STAMP)
	$(BIN)/augment cohort liver-lesions --out cohorts/liver-lesions-seed0 --seed 0 --overwrite
	$(BIN)/augment cohort lung-nodules --out cohorts/lung-nodules-seed0 --seed 0 --overwrite
	OMP_NUM_THREADS=1 $(BIN)/augment train frid-adar-liver --data cohorts/liver-lesions-seed0/train.h5 --out runs/frid-adar-liver --overwrite & \
	OMP_NUM_THREADS=1 $(BIN)/augment train onishi-lung-dcgan --data cohorts/lung-nodules-seed0/train.h5 --out runs/onishi-lung-dcgan --overwrite & \
	wait
	for name in frid-adar-liver onishi-lung-dcgan; do mkdir -p $(ZOO_DIR)/$$name && cp runs/$$name/model.safetensors runs/$$name/model.json $(ZOO_DIR)/$$name/; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
