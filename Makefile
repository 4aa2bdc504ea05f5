# The two set-up commands of README.md. Both install what they need (scripts/bootstrap.sh).
VENV ?= .venv
# uv at the version pyproject.toml requires, installed by scripts/bootstrap.sh (or UV=yours)
UV ?= .tools/uv/bin/uv
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

# pytest-xdist: two workers (this project's 2-core machines), each test module on one worker (its
# module fixtures built once); --no-loadscope-reorder needs pytest-xdist 3.8
PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: venv repro test test-fast lint bench

venv:
	@bash scripts/bootstrap.sh $(BOOTSTRAP_FLAGS)

repro: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# `make test` also installs Debian's chromium for the HTML report's browser test (as root, where missing)
test: BOOTSTRAP_FLAGS = --browser
test: venv
	$(UV) lock --check  # uv.lock matches pyproject.toml
	$(VENV)/bin/ruff check recap_data tests bench scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python bench/docs_tables.py --check
	$(VENV)/bin/python -m pytest -q -rs --durations=15 $(PARALLEL) tests  # -rs: each skipped test's reason

# A quick local answer: lint and every test not marked slow or sim (CI runs `make test`, all of them)
test-fast: venv
	$(VENV)/bin/ruff check recap_data tests bench scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q -x -m "not slow and not sim" $(PARALLEL) tests

bench: venv
	$(VENV)/bin/python bench/bench_store.py
	$(VENV)/bin/python bench/bench_value.py
	$(VENV)/bin/python bench/bench_labels.py
	$(VENV)/bin/python bench/bench_scale.py
	$(VENV)/bin/python bench/bench_label_processes.py
	$(VENV)/bin/python bench/bench_report.py
	$(VENV)/bin/python bench/bench_policy.py
	$(VENV)/bin/python bench/bench_real_size.py
	$(VENV)/bin/python bench/bench_rollout.py
	$(VENV)/bin/python bench/bench_world.py
	$(VENV)/bin/python bench/bench_recap.py
	$(VENV)/bin/python bench/bench_loops.py --work bench/work/loops
	$(VENV)/bin/python bench/bench_policy_budget.py --work bench/work/budget
	$(VENV)/bin/python bench/bench_value_inputs.py --work bench/work/value-inputs
	$(VENV)/bin/python bench/bench_time_input.py --work bench/work/time-input
	$(VENV)/bin/python bench/bench_pipeline.py
	$(VENV)/bin/python bench/docs_tables.py
