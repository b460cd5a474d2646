# The whole set-up: `make demo` and `make test` create and reuse .venv by themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Kerberos extra (gssapi) builds against MIT krb5's headers: install it when they are there.
EXTRAS := test$(shell command -v krb5-config >/dev/null 2>&1 && echo ,kerberos)

.PHONY: demo test fuzz bench clean

# setup.py and the C source: the optional OpenSSL AEAD binding is compiled at install.
$(STAMP): pyproject.toml setup.py espcore/_aead.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python >= 3.11 is needed (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	echo '$(EXTRAS)' > $(STAMP)

# Re-install when the available extras changed (e.g. krb5 headers installed since).
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(EXTRAS))
.PHONY: $(STAMP)
endif

demo: $(STAMP)
	$(BIN)/policyagent demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m "not interop and not root" $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
