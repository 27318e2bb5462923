# The two commands a new machine needs: `make demo` and `make test`. Both set up what they use.
# The lab (emulated NixOS hosts in mount namespaces) needs root.

VENV := .venv
BIN := $(VENV)/bin
LAB := .lab
APT_PACKAGES := openssh-server nix-bin age jq iproute2 make gcc libc6-dev sudo shellcheck python3-yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check lint shellcheck typecheck unit system venv down clean bench

demo: system venv  ## start 3 emulated NixOS hosts and put them on the lab's tailnet
	@$(BIN)/tailnix lab down --dir $(LAB) >/dev/null 2>&1 || true
	$(BIN)/tailnix lab up 3 --dir $(LAB)
	$(BIN)/pyinfra -y $(LAB)/inventory.py deploys/tailscale.py
	@for host in $$($(BIN)/python -c "import json; print(' '.join(h['name'] for h in json.load(open('$(LAB)/state/hosts.json')) if h['os'] == 'nixos'))"); do \
		echo "== $$host: tailscale status"; $(BIN)/tailnix lab ssh $$host --dir $(LAB) -- tailscale status; done
	@echo
	@echo "The lab is still running. Look around:  $(BIN)/tailnix lab ssh nixos-1 --dir $(LAB) -- cat /etc/nixos/tailscale-autoconnect.nix"
	@echo "Deploy again (nothing changes):          $(BIN)/pyinfra -y $(LAB)/inventory.py deploys/tailscale.py"
	@echo "Stop it:                                 make down"

test: system venv check unit  ## lint, type check, and every test

check: lint shellcheck typecheck

lint: venv
	$(BIN)/ruff check src tests deploys group_data inventory.py
	$(BIN)/ruff format --check src tests deploys group_data inventory.py

shellcheck: system  ## the shell tailnix runs on hosts, as POSIX sh
	shellcheck --shell=sh src/tailnix/host_scripts/*.sh

typecheck: venv
	$(BIN)/mypy

# Tests run in parallel, one worker per core (at most 4), each worker with a lab of its own; the tests of a
# file stay on one worker, in order (some files follow one fleet through its life).
unit: venv
	$(BIN)/pytest --numprocesses=auto --maxprocesses=4 --dist=loadfile

system:  ## the Debian packages the lab and the tests use
	@missing=""; for package in $(APT_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml lab/pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./lab
	touch $@

bench: system venv  ## time a no-op redeploy of a lab fleet against a bare SSH round trip (HOSTS=50 ROUNDS=5)
	$(BIN)/tailnix bench --hosts $(or $(HOSTS),20) --rounds $(or $(ROUNDS),5)

down:  ## stop the demo lab
	$(BIN)/tailnix lab down --dir $(LAB)

clean: down
	rm -rf $(VENV) $(LAB)
