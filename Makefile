# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini mini-slu

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end: data, text, encoder, calibration, alignment (TASU, calibrated, TTS, paired),
# decoding, scoring. The SLU sweep (stage 7, curriculum-finetune) is left to `make mini-slu`: it takes
# longer than all the rest.
mini: setup
	recipes/mini/run.sh --stop-stage 6
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# The mini recipe with its SLU sweep: 4 schemes x 4 speech budgets x 2 tracks (see recipes/mini/README.md).
mini-slu: setup
	recipes/mini/run.sh
	@cat exp/mini/RESULTS.md
