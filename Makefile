# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini mini-baselines mini-slu

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end in about 25 minutes: data, text, encoder, calibration, the text-only systems
# (tasu, calibrated), decoding (with the encoder's own ctc output and the whisper peer), scoring. The
# baselines trained on audio (tts, paired) are `make mini-baselines`; the SLU sweep is `make mini-slu`.
mini: setup
	recipes/mini/run.sh --stop-stage 4
	recipes/mini/run.sh --stage 5 --stop-stage 5 --system tasu --system calibrated
	recipes/mini/run.sh --stage 6 --stop-stage 6 --set 'decode.systems=[ctc, tasu, calibrated, whisper]'
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# What `make mini` runs, plus the tts and paired baselines (about 12 minutes more).
mini-baselines: mini
	recipes/mini/run.sh --stage 5 --stop-stage 6
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# The mini recipe with its SLU sweep: 4 schemes x 4 speech budgets x 2 tracks (see recipes/mini/README.md).
mini-slu: setup
	recipes/mini/run.sh
	@cat exp/mini/RESULTS.md
