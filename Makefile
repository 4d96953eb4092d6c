# The two commands: `make demo` and `make test`. Both create .venv with pip when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject.toml, which keeps ranges): these exact wheels are
# the ones available offline on the project's machines, so an install never needs the network for them.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench results clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stability demo

# The README's results: the default study with seeds 0-5 (what `make demo` runs) and, as an independent
# replication, seeds 6-11; --settle on a copy of the default study (seeds added where claims stay open); the
# same claims on Fashion-MNIST (needs its IDX files: apt-get install dataset-fashion-mnist; about 30 min) and
# the two lined up; the modern tricks' study; the accuracy study (5 seeds, about 27 min) and the Lipschitz
# study. Their reports go to notebooks/results/ and the README quotes them (stability.docs).
results: $(STAMP)
	$(BIN)/stability sweep ablations/digits.yaml --out runs/digits
	$(BIN)/stability report runs/digits --out notebooks/results/digits --format md,csv
	$(BIN)/stability sweep ablations/digits.yaml --seeds 6,7,8,9,10,11 --out runs/digits-seeds6-11
	$(BIN)/stability report runs/digits-seeds6-11 --out notebooks/results/digits-seeds6-11 --format md,csv --no-plots
	$(BIN)/stability sweep ablations/digits_full.yaml --out runs/digits_full
	$(BIN)/stability report runs/digits_full --out notebooks/results/digits_full --format md,csv --no-plots
	$(BIN)/stability sweep ablations/lipschitz.yaml --out runs/lipschitz
	$(BIN)/stability report runs/lipschitz --out notebooks/results/lipschitz --format md,csv
	$(BIN)/stability report runs/digits runs/digits-seeds6-11 --out notebooks/results/compare --format md,csv
	rm -rf runs/digits-settle && cp -r runs/digits runs/digits-settle
	$(BIN)/stability sweep ablations/digits.yaml --settle --out runs/digits-settle
	$(BIN)/stability report runs/digits-settle --out notebooks/results/digits-settle --format md,csv --no-plots
	$(BIN)/stability sweep ablations/fashion.yaml --out runs/fashion
	$(BIN)/stability report runs/fashion --out notebooks/results/fashion --format md,csv
	$(BIN)/stability report runs/digits runs/fashion --out notebooks/results/compare-datasets --format md,csv
	$(BIN)/stability sweep ablations/modern.yaml --out runs/modern
	$(BIN)/stability report runs/modern --out notebooks/results/modern --format md,csv
	$(BIN)/python -m stability.docs README.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/stability bench model

clean:
	rm -rf $(VENV) runs reports .pytest_cache
