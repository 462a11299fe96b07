# Two commands for a fresh machine: `make run` (install + start the app), `make test` (install + all tests).
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
PORT ?= 8501
export HF_HUB_OFFLINE := 1

.PHONY: run test test-fast test-slow test-hostile loadtest browser postgres wordnet corpora

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP) corpora
	$(VENV)/bin/streamlit run app.py --server.headless true --server.address 127.0.0.1 --server.port $(PORT)

# Debian's chromium for the real-browser test (playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed and cannot be (not root): the browser test will skip"

# Debian's PostgreSQL for the many-workers sweep test (it starts its own throwaway server; nothing runs as a service).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } || \
	  echo "postgresql is not installed and cannot be (not root): the many-workers test will skip (fails under CI=true)"

# Debian's WordNet 3.0, pinned, the source of the general healing corpus (compress/measure/general.py; a test checks
# the corpus's sha256 against assets/heal/README.md's).
WORDNET := wordnet-base=1:3.0-37
wordnet:
	@test -f /usr/share/wordnet/data.noun || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(WORDNET) >/dev/null; } || \
	  echo "wordnet-base is not installed and cannot be (not root): heal_text general / both / all will refuse"

# FOLDOC (Debian's dict-foldoc 20230119-1, GNU FDL), the computing part of heal_text all (compress/measure/computing.py):
# its two dictd files unpacked into data/corpora/, not installed (the package would pull a dictionary server).
FOLDOC := dict-foldoc=20230119-1
corpora: wordnet
	@test -f data/corpora/foldoc.index || { mkdir -p data/corpora/deb && cd data/corpora/deb && \
	  { apt-get download -qq $(FOLDOC) 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    apt-get download -qq $(FOLDOC) 2>/dev/null; }; } && dpkg-deb -x dict-foldoc_*.deb x && \
	  mv x/usr/share/dictd/foldoc.dict.dz x/usr/share/dictd/foldoc.index .. && cd .. && rm -rf deb; } || \
	  echo "FOLDOC could not be fetched (apt-get download $(FOLDOC)): heal_text all will refuse"

# every test but the heavy end-to-end duplicates, in TEST_WORKERS processes (pytest-xdist, one file per worker at a
# time, the longest files first: tests/conftest.py LONGEST; one torch thread each); the 25 slowest are listed with
# their seconds
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP) browser postgres corpora
	$(VENV)/bin/python -m pytest tests -q -rs -m "not heavy" $(XDIST) --durations=25

# not part of `make test`: the heavy end-to-end cases a cheaper test covers (real-model round trips, CLI on MiniLM)
test-slow: $(STAMP) browser postgres corpora
	$(VENV)/bin/python -m pytest tests -q -rs -m heavy --durations=15

# the inner loop (under a minute): the library's unit tests, none of those marked slow (tests/conftest.py) or heavy
test-fast: $(STAMP) corpora
	$(VENV)/bin/python -m pytest tests -q -rs -m "not slow and not heavy" $(XDIST)

# not part of `make test`: every page under 1,000 hostile links each (make test runs 30 a page), minutes
test-hostile: $(STAMP)
	HOSTILE_N=1000 $(VENV)/bin/python -m pytest tests/test_pages_hostile.py -q -rs -k links

# not part of `make test`: six browser sessions (the sixth hostile) against one server for LOAD_MINUTES (default 10), one JSON summary
loadtest: $(STAMP) browser
	$(VENV)/bin/python tests/loadtest.py
