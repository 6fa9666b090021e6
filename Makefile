# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini mini-base mini-words mini-xlingual mini-tts mini-understand mini-slu mini-distill mini-tesu

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end (28-50 minutes on 2 CPU cores, by their speed: README): data, text, encoder, calibration, alignment (tasu,
# calibrated, paired), decoding (with the encoder's own ctc output and the whisper peer), scoring. The TTS
# baseline (tts) is `make mini-tts`; the SLU sweep is `make mini-slu`.
# What `make mini` decodes: the encoder's CTC output alone and searched with the text corpora's LM, the three
# speech LLMs, the Whisper peer, and on the spoken questions the original LLM reading their text (the ceiling),
# the ctc transcript and the peer's (the cascades).
DECODED = --system ctc --system ctc_lm --system tasu --system calibrated --system paired --system whisper \
          --system text_llm --system ctc_llm --system whisper_llm
mini: setup
	recipes/mini/run.sh --stop-stage 4
	.venv/bin/speechllm align --recipe mini --system tasu --system calibrated --system paired
	.venv/bin/speechllm decode --recipe mini $(DECODED)
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# What `make mini` runs with the Whisper base encoder and peer instead of tiny.en, in exp/mini-base (about 39
# minutes from scratch: front caching, calibration and the peer cost more; every WER in recipes/mini/RESULTS.md).
BASE = --exp-dir exp/mini-base --set train_encoder.model.whisper=whisper-base \
       --set decode.peers.whisper.model=whisper-base --set decode.peers.whisper.language=en
mini-base: setup
	recipes/mini/run.sh --stop-stage 4 $(BASE)
	.venv/bin/speechllm align --recipe mini $(BASE) --system tasu --system calibrated --system paired
	.venv/bin/speechllm decode --recipe mini $(BASE) $(DECODED)
	recipes/mini/run.sh --stage 8 $(BASE)
	@cat exp/mini-base/RESULTS.md

# The front end whose units the LLM can read, and speech LLMs that understand (issue 23), in exp/mini-words:
# the complete frozen Whisper tiny.en decoding its own word pieces (encoder whisper-tokens: nothing trained),
# calibrated on dev, read through the LLM's own embeddings of the pieces (projector unit-embedding); the
# transcription-only calibrated system and the behaviour-aligned systems (behaviour_lora: LoRA; behaviour:
# the projector alone), decoded on the test sets and the spoken questions beside the text ceiling and the two
# cascades; then SLU from behaviour_lora without speech and with all of it (recipes/mini/RESULTS.md). About an
# hour after the data on 2 cores: its commands were run one by one in exp/mini-we (behaviour_lora and behaviour
# about 15 minutes each, half of it the LLM's own replies; the two SLU cells 16), not as one target.
WORDS = --exp-dir exp/mini-words --set train_encoder.encoder=whisper-tokens \
        --set 'train_encoder.model={whisper: whisper-tiny.en, units: 16000}' --set 'calibrate.compare={}' \
        --set calibrate.text_branch=null --set model.projector.kind=unit-embedding \
        --set curriculum_finetune.init=behaviour_lora
WORDS_DECODED = --set 'decode.systems=[ctc, calibrated, behaviour_lora, behaviour, whisper, text_llm, ctc_llm, whisper_llm]'
mini-words: setup
	recipes/mini/run.sh --stop-stage 4 $(WORDS)
	.venv/bin/speechllm align --recipe mini $(WORDS) --system calibrated --system behaviour_lora --system behaviour
	.venv/bin/speechllm decode --recipe mini $(WORDS) $(WORDS_DECODED)
	.venv/bin/speechllm curriculum-finetune --recipe mini $(WORDS) --track en --scheme text-only --budget 0
	.venv/bin/speechllm curriculum-finetune --recipe mini $(WORDS) --track en --scheme direct-mix --budget 100
	recipes/mini/run.sh --stage 8 $(WORDS) $(WORDS_DECODED)
	@cat exp/mini-words/RESULTS.md

# The cross-lingual track (en-de) on phoneme units both languages share, Whisper base encoder, in exp/mini-ipa:
# data, phoneme tokenizer, encoder, tasu, then German SLU text-only and with a quarter of the speech (about 20
# minutes; recipes/mini/RESULTS.md).
IPA = --exp-dir exp/mini-ipa --set prepare_text.tokenizer.units=phonemes --set train_encoder.model.whisper=whisper-base
mini-xlingual: setup
	recipes/mini/run.sh --stop-stage 3 $(IPA)
	.venv/bin/speechllm align --recipe mini $(IPA) --system tasu
	.venv/bin/speechllm curriculum-finetune --recipe mini $(IPA) --track en-de --scheme text-only --budget 0
	.venv/bin/speechllm curriculum-finetune --recipe mini $(IPA) --track en-de --scheme curriculum --budget 25
	recipes/mini/run.sh --stage 8 $(IPA)
	@cat exp/mini-ipa/RESULTS.md

# What `make mini` runs, plus the systems of the understanding comparison (recipes/mini/RESULTS.md):
# multitask (transcription and the LLM's own replies to questions and commands, text only),
# calibrated_frozen (the projector alone), salad_tasks (SALAD over the same instructions, text only) and
# salad_tasks_active (then 200 synthesized questions), decoded on the test sets and the spoken questions, and
# the questions' text, ctc and Whisper transcripts read by Qwen2.5-Coder-0.5B-Instruct.
UNDERSTAND = multitask, calibrated_frozen, salad_tasks, salad_tasks_active, text_qwen, ctc_qwen, whisper_qwen
mini-understand: mini
	.venv/bin/speechllm align --recipe mini --system multitask --system calibrated_frozen
	.venv/bin/speechllm distill --recipe mini --system salad_tasks --system salad_tasks_active \
	    --set 'distill.measure.systems=[calibrated]'
	.venv/bin/speechllm decode --recipe mini --set 'decode.systems=[$(UNDERSTAND)]'
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# What `make mini` runs, plus the tts baseline (about 6 minutes more).
mini-tts: mini
	recipes/mini/run.sh --stage 5 --stop-stage 6
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# What `make mini` runs, plus SALAD distillation (about 65 minutes more): two curriculum-finetune cells,
# salad_half (text only), then salad_active and salad_random (200 synthesized utterances each) and salad_chat
# (the LLM's own answers), with the text-speech gap of every system, decoded and scored
# (recipes/mini/README.md).
mini-distill: mini
	.venv/bin/speechllm curriculum-finetune --recipe mini --track en --scheme text-only --budget 0
	.venv/bin/speechllm curriculum-finetune --recipe mini --track en --scheme curriculum --budget 25
	.venv/bin/speechllm distill --recipe mini --system salad_active --system salad_random --system salad_chat
	.venv/bin/speechllm decode --recipe mini --set 'decode.systems=[salad_half,salad_active,salad_random,salad_chat]'
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# The TESU comparison (issue 14): the tesu system (unified-encoder interface, text only) aligned, decoded and
# scored beside tasu and paired (about 25 minutes more; make mini's calibrate trains its text branch).
mini-tesu: mini
	.venv/bin/speechllm align --recipe mini --system tesu
	.venv/bin/speechllm decode --recipe mini --set 'decode.systems=[tesu]'
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# The mini recipe with its SLU sweep: 4 schemes x 4 speech budgets x 2 tracks (see recipes/mini/README.md).
mini-slu: setup
	recipes/mini/run.sh
	@cat exp/mini/RESULTS.md
