# The two commands of the README. Both run tools/setup.sh first (fast when nothing is missing).
.PHONY: setup test mini mini-head mini-base mini-xlingual mini-tts mini-understand mini-slu mini-distill mini-tesu

setup:
	@bash tools/setup.sh

# The test suite (what CI runs).
test: setup
	.venv/bin/python -m pytest -q

# The mini recipe end to end (about 40 minutes on 2 CPU cores, by their speed: README): data, text, the front
# end (whisper-tokens: the complete frozen Whisper tiny.en decoding its own word pieces, nothing trained),
# calibration, alignment from text alone (tasu, calibrated, behaviour_lora), decoding (the front end's own
# transcript ctc, the three speech LLMs, the Whisper peer, and on the spoken questions the original LLM
# reading their text, the ceiling, and the ctc and peer transcripts, the cascades), scoring. Baselines
# trained on speech (tts, paired) are `make mini-tts`; the SLU cells and SALAD `make mini-understand`.
DECODED = --system ctc --system tasu --system calibrated --system behaviour_lora --system whisper \
          --system text_llm --system ctc_llm --system whisper_llm
mini: setup
	recipes/mini/run.sh --stop-stage 4
	.venv/bin/speechllm align --recipe mini --system tasu --system calibrated --system behaviour_lora
	.venv/bin/speechllm decode --recipe mini $(DECODED)
	recipes/mini/run.sh --stage 8
	@cat exp/mini/RESULTS.md

# The recipe's earlier front end, a CTC head (2 Conformer blocks over BPE-256 units, trained 500 steps) on the
# frozen Whisper tiny.en, with what only it supports: the LM search ctc_lm, the unified interface tesu (its
# text branch, read by unit-lookup) and calibrate's report on train and tts_text; calibrated at that head's
# simulated level (0.3 -> 1.3). In exp/mini-head; every earlier WER of recipes/mini/RESULTS.md is on it.
HEAD_SETS = --set train_encoder.encoder=whisper-ctc \
            --set 'train_encoder.model={whisper: whisper-tiny.en, head: {d_model: 256, layers: 2, heads: 4, ff_dim: 1024}}' \
            --set 'calibrate.compare={train: train, tts_text: tts_text}' --set 'calibrate.text_branch={split: train}' \
            --set model.projector.kind=unit-lookup \
            --set 'align.systems.calibrated.levels=[[0.0, 0.3], [0.4, 1.0], [1.0, 1.3]]' \
            --set 'align.systems.tesu={mode: unified, text_sets: [scripture_text, commands_text]}' \
            --set curriculum_finetune.init=calibrated
HEAD = --exp-dir exp/mini-head $(HEAD_SETS)
HEAD_DECODED = --system ctc --system ctc_lm --system tasu --system calibrated --system paired --system whisper \
               --system text_llm --system ctc_llm --system whisper_llm
# The CTC head's recipe end to end with the options $(1) (its folder and settings): `$(call head_recipe,...)`.
define head_recipe
	recipes/mini/run.sh --stop-stage 4 $(1)
	.venv/bin/speechllm align --recipe mini $(1) --system tasu --system calibrated --system paired
	.venv/bin/speechllm decode --recipe mini $(1) $(HEAD_DECODED)
	recipes/mini/run.sh --stage 8 $(1)
endef
mini-head: setup
	$(call head_recipe,$(HEAD))
	@cat exp/mini-head/RESULTS.md

# What `make mini-head` runs with the Whisper base encoder and peer instead of tiny.en, in exp/mini-base (about
# 39 minutes from scratch: front caching, calibration and the peer cost more; every WER in recipes/mini/RESULTS.md).
BASE = --exp-dir exp/mini-base $(HEAD_SETS) --set train_encoder.model.whisper=whisper-base \
       --set decode.peers.whisper.model=whisper-base --set decode.peers.whisper.language=en
mini-base: setup
	$(call head_recipe,$(BASE))
	@cat exp/mini-base/RESULTS.md

# The cross-lingual track (en-de) on phoneme units both languages share: the CTC head over phonemes on the
# Whisper base encoder, in exp/mini-ipa: data, phoneme tokenizer, encoder, tasu, then German SLU from tasu
# text-only and with a quarter of the speech (about 20 minutes; recipes/mini/RESULTS.md).
IPA = --exp-dir exp/mini-ipa $(HEAD_SETS) --set prepare_text.tokenizer.units=phonemes \
      --set train_encoder.model.whisper=whisper-base --set curriculum_finetune.init=tasu
mini-xlingual: setup
	recipes/mini/run.sh --stop-stage 3 $(IPA)
	.venv/bin/speechllm align --recipe mini $(IPA) --system tasu
	.venv/bin/speechllm curriculum-finetune --recipe mini $(IPA) --track en-de --scheme text-only --budget 0
	.venv/bin/speechllm curriculum-finetune --recipe mini $(IPA) --track en-de --scheme curriculum --budget 25
	recipes/mini/run.sh --stage 8 $(IPA)
	@cat exp/mini-ipa/RESULTS.md

# What `make mini` runs, plus the rest of the understanding comparison (recipes/mini/RESULTS.md): behaviour
# (behaviour_lora's training with the LLM frozen), salad_tasks (SALAD over the same instructions from
# behaviour_lora, text only) and salad_tasks_active (then 200 synthesized questions chosen by misalignment),
# the questions' text, ctc and Whisper transcripts read by Qwen2.5-Coder-0.5B-Instruct, and SLU from
# behaviour_lora without speech and with all of it.
UNDERSTAND = behaviour, salad_tasks, salad_tasks_active, text_qwen, ctc_qwen, whisper_qwen
mini-understand: mini
	.venv/bin/speechllm align --recipe mini --system behaviour
	.venv/bin/speechllm distill --recipe mini --system salad_tasks --system salad_tasks_active \
	    --set 'distill.measure.systems=[behaviour_lora]'
	.venv/bin/speechllm decode --recipe mini --set 'decode.systems=[$(UNDERSTAND)]'
	.venv/bin/speechllm curriculum-finetune --recipe mini --track en --scheme text-only --budget 0
	.venv/bin/speechllm curriculum-finetune --recipe mini --track en --scheme direct-mix --budget 100
	recipes/mini/run.sh --stage 8 --set 'decode.systems=[ctc, whisper, text_llm, ctc_llm, whisper_llm, $(UNDERSTAND)]'
	@cat exp/mini/RESULTS.md

# What `make mini` runs, plus the baselines aligned on real posteriors: tts (1,200 synthesized sentences of the
# text corpora) and paired (the train split's 2,000 utterances); Whisper decodes both splits first.
mini-tts: mini
	.venv/bin/speechllm align --recipe mini --system tts --system paired
	.venv/bin/speechllm decode --recipe mini --system tts --system paired
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

# The TESU comparison (issue 14) on the CTC head: the tesu system (unified-encoder interface, text only)
# aligned, decoded and scored beside tasu and paired in exp/mini-head (about 25 minutes more).
mini-tesu: mini-head
	.venv/bin/speechllm align --recipe mini $(HEAD) --system tesu
	.venv/bin/speechllm decode --recipe mini $(HEAD) --set 'decode.systems=[tesu]'
	recipes/mini/run.sh --stage 8 $(HEAD)
	@cat exp/mini-head/RESULTS.md

# The mini recipe with its SLU sweep: 4 schemes x 4 speech budgets x 2 tracks (see recipes/mini/README.md).
mini-slu: setup
	recipes/mini/run.sh
	@cat exp/mini/RESULTS.md
