# Supply-chain targets for a release; included by the top-level Makefile (`include mk/release.mk`).
#
#   make lock    re-pin the runtime dependencies of pyproject.toml, with hashes, into requirements.lock
#   make sbom    CycloneDX SBOM (JSON, spec 1.6) of exactly what requirements.lock installs
#   make audit   pip-audit of requirements.lock against the PyPI advisory database (needs the Internet)
#
# The tools live in the development venv, never on the Pi. docs/operations.md ("Release") gives
# the order: lock, review the diff, audit, sbom, tag.

VENV ?= .venv
BIN  ?= $(VENV)/bin
RELEASE_STAMP := $(VENV)/.release-tools
RELEASE_TOOLS := "pip-tools>=7.4" "cyclonedx-bom>=4.0" "pip-audit>=2.7"
SBOM_DIR ?= dist
VITALWATCH_VERSION = $(shell $(BIN)/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# The lock must come from the public index only: ignore local find-links/index overrides, which
# would pin local files (or their hashes only) into a file meant for every Pi.
LOCK_ENV ?= env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null
AUDIT_FLAGS ?=

.PHONY: lock sbom audit

$(RELEASE_STAMP): | $(STAMP)
	$(BIN)/pip install --quiet $(RELEASE_TOOLS)
	touch $@

lock: $(RELEASE_STAMP)
	$(LOCK_ENV) $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

sbom: $(RELEASE_STAMP) requirements.lock
	mkdir -p $(SBOM_DIR)
	$(BIN)/cyclonedx-py requirements requirements.lock --pyproject pyproject.toml \
		--of JSON --output-reproducible --validate \
		-o $(SBOM_DIR)/vitalwatch-$(VITALWATCH_VERSION).cdx.json
	@echo "sbom: $(SBOM_DIR)/vitalwatch-$(VITALWATCH_VERSION).cdx.json"

audit: $(RELEASE_STAMP) requirements.lock
	$(BIN)/pip-audit --disable-pip --require-hashes --progress-spinner off --strict $(AUDIT_FLAGS) \
		-r requirements.lock
