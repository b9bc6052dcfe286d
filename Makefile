# ipanon — the two commands of the README, and a few more.
#   make demo   set up everything (virtualenv, packages, Kafka from Maven Central) and run the demo
#   make test   set up everything and run the whole test suite against a real local broker
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench install kafka clean demo-key-modes core core-if-possible

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed demo-key-modes core-if-possible

# The per-event core compiled with mypyc into the virtualenv (agents/compiled_core.py), used only
# while it matches the sources (docs/operations.md, "The compiled core").  `make core` fails when
# the build fails; install builds it too (a no-op when it matches), but there a failed build (no C
# compiler, no Python headers) leaves the core interpreted with a warning, and IPANON_CORE=interpreted
# skips it.  IPANON_CORE=compiled makes a failed build an error.
core: $(BIN)/.installed
	@$(BIN)/ipanon core build

core-if-possible: $(BIN)/.installed
	@case "$$IPANON_CORE" in \
	  interpreted) echo "ipanon core: IPANON_CORE=interpreted: not built, the core runs interpreted";; \
	  compiled) $(BIN)/ipanon core build;; \
	  *) $(BIN)/ipanon core build --if-possible;; \
	esac

# git keeps no file modes: the demo private keys arrive 0644 in a fresh clone, and ipanon
# refuses key files readable by group/others.  (Demo keys only; see config/keys/demo/README.)
demo-key-modes:
	chmod 600 config/keys/demo/*.pem

kafka: install
	$(BIN)/ipanon broker fetch >/dev/null

demo: kafka
	$(BIN)/ipanon demo

# Before the run: which optional real peers (promtool, prometheus, chromium, softflowd) are missing and the
# command that installs them; after it: how many tests their absence skipped (.ci/peers.py).
JUNIT := .pytest_cache/make-test-junit.xml
# pytest-xdist: TEST_WORKERS processes, each with its own session broker, each taking whole test
# files (a module's fixtures stay in one process); the suite waits on brokers and workers more
# than it computes (TEST_WORKERS=2 took CI from 57 to 33 min).  Default 0, one process: under two,
# a fresh-clone run failed test_mapping_rebalance's frozen-worker test (stale writes after the thaw).
TEST_WORKERS ?= 0
XDIST := -n $(TEST_WORKERS) --dist loadfile
test: kafka
	@$(BIN)/python .ci/peers.py before
	@mkdir -p .pytest_cache && rm -f $(JUNIT)
	@$(BIN)/ipanon core status || true
	@$(BIN)/python -m pytest $(XDIST) --junitxml=$(JUNIT) $(PYTEST_ARGS); rc=$$?; \
	  $(BIN)/python .ci/peers.py after $(JUNIT); \
	  if $(BIN)/ipanon core status >/dev/null 2>&1; then \
	    echo "== the suite ran on the compiled core: its unit and hostile-input tests once more, interpreted"; \
	    IPANON_CORE=interpreted $(BIN)/python -m pytest $(XDIST) -q -p no:cacheprovider tests/unit tests/robustness \
	      -m "not broker" $(PYTEST_ARGS) || rc=1; \
	  fi; exit $$rc

bench: kafka
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
