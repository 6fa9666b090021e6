# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end. Stages after prepare-text are not implemented yet.
mini: setup
	recipes/mini/run.sh --stop-stage 2
	@echo "mini: stages 3-7 (train-encoder, align, decode, score) are not implemented yet."
