# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end: data, text, encoder, TASU + paired alignment, decoding, scoring.
mini: setup
	recipes/mini/run.sh
	@cat exp/mini/RESULTS.md
