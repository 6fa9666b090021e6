"""The assembled speech LLM: batched generation must not change what each utterance decodes to, and the
training loss must see the target tokens only.

Decoding batches are left-padded, so an utterance's absolute column depends on its batch neighbours; only
an attention mask over the real positions and position ids counted from the first real position make
that invisible to the LLM. A tiny random Llama changes its greedy tokens when the mask leaks padding, so
comparing tokens catches that; RoPE, though, only sees position differences, so a constant shift of a
row's positions leaves a Llama's tokens (almost) unchanged and is checked on the position ids themselves,
because models with absolute or length-dependent position encodings would decode differently.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechllm_cli.core.configs import GenerationConfig
from speechllm_cli.core.speech_llm import IGNORE, Prompt, SpeechLLM

UNITS = 8
"""Width of the inserted vectors the projector maps into the LLM (a stand-in for the CTC vocabulary)."""

PROMPT = Prompt(prefix=[1, 2], suffix=[3], end_of_turn=5)


def _model(attention: str) -> SpeechLLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attention)
    return SpeechLLM(LlamaForCausalLM(config).eval(), torch.nn.Linear(UNITS, 32), PROMPT, pad_id=0).eval()


def _inserted(model: SpeechLLM, lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    """Projected random inputs of the given lengths, as ``generate_texts`` hands them to ``generate``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [model.projector(torch.randn(n, UNITS, generator=generator)) for n in lengths]


SETTINGS = {
    "greedy": GenerationConfig(max_new_tokens=12, length_ratio=8.0),
    "own bounds": GenerationConfig(max_new_tokens=40, length_ratio=1.0),
    "no repeat 2-gram": GenerationConfig(max_new_tokens=20, length_ratio=8.0, no_repeat_ngram=2),
    "repetition penalty": GenerationConfig(max_new_tokens=20, length_ratio=8.0, repetition_penalty=1.5),
    "beam 3 with penalty": GenerationConfig(beam=3, max_new_tokens=12, length_ratio=8.0, repetition_penalty=1.3),
}
"""Row bounds that differ (``own bounds``: 1 token per input position + 4) end rows at different steps.
``transformers``' own repetition penalty skipped as many generated tokens as a row had left padding,
which the penalty settings catch."""

LENGTHS = [3, 17, 1, 9, 30, 6, 12, 2]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_batched_decoding_equals_one_at_a_time(attention: str, setting: str) -> None:
    model = _model(attention)
    inserted = _inserted(model, LENGTHS)
    config = SETTINGS[setting]

    alone = [model.generate([x], config)[0] for x in inserted]
    together = model.generate(inserted, config)

    assert together == alone
    assert sum(len(h) for h in alone) > 4 * len(alone), "hypotheses too short to compare anything"
    assert len({tuple(h) for h in alone}) > 1, "all inputs decode alike: the test would not see a mix-up"


def _transformers_greedy(model: SpeechLLM, inserted: list[torch.Tensor], config: GenerationConfig) -> list[list[int]]:
    """What ``generate`` returned before it had its own greedy loop: ``transformers``' search over the whole
    batch up to the largest bound, each row then cut at its bound and at the end-of-turn token."""
    bounds = [min(config.max_new_tokens, math.ceil(config.length_ratio * x.shape[0]) + 4) for x in inserted]
    with torch.no_grad():
        output = model.llm.generate(**model.batch_inputs(inserted, left_pad=True), max_new_tokens=max(bounds),
                                    do_sample=False, no_repeat_ngram_size=config.no_repeat_ngram,
                                    eos_token_id=PROMPT.end_of_turn, pad_token_id=model.pad_id)
    rows = [row[:bound] for row, bound in zip(output.tolist(), bounds, strict=True)]
    return [row[: row.index(PROMPT.end_of_turn)] if PROMPT.end_of_turn in row else row for row in rows]


@pytest.mark.parametrize("setting", ["greedy", "own bounds", "no repeat 2-gram"])
def test_greedy_decodes_what_transformers_generate_does(setting: str) -> None:
    model = _model("sdpa")
    inserted = _inserted(model, LENGTHS)

    assert model.generate(inserted, SETTINGS[setting]) == _transformers_greedy(model, inserted, SETTINGS[setting])


def test_a_finished_row_leaves_the_batch() -> None:
    """Every decoding step computes only the rows whose hypothesis is still running."""
    model = _model("sdpa")
    inserted = _inserted(model, LENGTHS)
    config = SETTINGS["own bounds"]
    rows: list[int] = []
    hook = model.llm.register_forward_pre_hook(
        lambda _module, _args, kwargs: rows.append(kwargs["input_ids"].shape[0])
        if kwargs.get("input_ids") is not None else None, with_kwargs=True)
    try:
        hypotheses = model.generate(inserted, config)
    finally:
        hook.remove()

    bounds = [min(config.max_new_tokens, math.ceil(config.length_ratio * n) + 4) for n in LENGTHS]
    # tokens each row generated: its hypothesis, and the end-of-turn token unless its bound stopped it
    ended = [len(h) + (len(h) < bound) for h, bound in zip(hypotheses, bounds, strict=True)]
    assert rows == [sum(end > step for end in ended) for step in range(1, max(ended))]
    assert rows[-1] < rows[0], "every row ran to the end: the test would not see a row leave"


def test_every_row_counts_positions_from_its_first_real_position() -> None:
    model = _model("sdpa")
    sizes = [3, 11, 1]
    inserted = _inserted(model, sizes)
    seen: list[torch.Tensor] = []
    hook = model.llm.model.rotary_emb.register_forward_pre_hook(
        lambda _module, args, kwargs: seen.append(kwargs.get("position_ids", args[-1]).clone()), with_kwargs=True)
    try:
        model.generate(inserted, GenerationConfig(max_new_tokens=4, length_ratio=8.0))
    finally:
        hook.remove()

    prompt = len(PROMPT.prefix) + len(PROMPT.suffix)
    real = [prompt + n for n in sizes]
    prefill, *steps = seen
    assert [row[-n:].tolist() for row, n in zip(prefill, real, strict=True)] == [list(range(n)) for n in real]
    assert steps, "no decoding step after the prompt"
    for step, positions in enumerate(steps):
        assert positions[:, -1].tolist() == [n + step for n in real]


def test_batch_is_left_padded_with_a_mask_over_real_positions_only() -> None:
    model = _model("sdpa")
    inserted = _inserted(model, [2, 5])

    inputs = model.batch_inputs(inserted, left_pad=True)

    width = len(PROMPT.prefix) + 5 + len(PROMPT.suffix)
    assert inputs["attention_mask"].tolist() == [[0, 0, 0] + [1] * (width - 3), [1] * width]
    assert not inputs["inputs_embeds"][0, :3].any()


def test_loss_is_cross_entropy_over_target_tokens_only() -> None:
    """Right-padded training batch against a per-utterance hand computation on unpadded sequences."""
    model = _model("sdpa")
    inserted = _inserted(model, [4, 11, 7])
    targets = [[7, 8, 9, PROMPT.end_of_turn], [10, PROMPT.end_of_turn], [11, 12, 13, 14, 15, PROMPT.end_of_turn]]
    embedding = model.llm.get_input_embeddings()

    total, count = torch.tensor(0.0), 0
    with torch.no_grad():
        for x, target in zip(inserted, targets, strict=True):
            context = torch.cat([embedding(torch.tensor(PROMPT.prefix)), x, embedding(torch.tensor(PROMPT.suffix))])
            sequence = torch.cat([context, embedding(torch.tensor(target))])
            logits = model.llm(inputs_embeds=sequence[None]).logits[0]
            predicting = logits[len(context) - 1: len(sequence) - 1]
            total += torch.nn.functional.cross_entropy(predicting, torch.tensor(target), reduction="sum")
            count += len(target)
        loss = model.loss(inserted, targets)

    assert torch.allclose(loss, total / count, atol=1e-5)
    labels = model.batch_inputs(inserted, targets)["labels"]
    kept = [[t for t in row if t != IGNORE] for row in labels.tolist()]
    assert kept == targets
