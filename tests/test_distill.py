"""SALAD's distillation core: the KL term, the loss mix, the teacher (the LLM with its adapters off), the
alignment of student and teacher response positions, and forgetting F / misalignment M.

The model tests use a tiny random Llama wrapped with LoRA whose B matrices are nonzero, so that the adapted
model really differs from the original one and a teacher that kept its adapters on would be caught.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from speechllm_cli.common.config import validate
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import CPSConfig, DistillConfig, GenerationConfig
from speechllm_cli.core.distill import (
    Distiller,
    Pair,
    ResponseLogits,
    distill_loss,
    forgetting,
    loss,
    misalignment,
    pair_collate,
    response_logits,
    teacher_logits,
    teacher_responses,
    token_kl,
)
from speechllm_cli.core.feeds import Example, tasu_cps
from speechllm_cli.core.speech_llm import Prompt, SpeechLLM
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.core.training import TrainJob, train

UNITS = 8
PROMPT = Prompt(prefix=[1, 2], suffix=[3], end_of_turn=5)
TRANSCRIPTS = [[10, 11], [12, 13, 14, 15, 16, 17], [20]]
RESPONSES = [[30, 31, 5], [32, 5], [33, 34, 35, 36, 5]]

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _llm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def _speech_llm(llm: torch.nn.Module) -> SpeechLLM:
    torch.manual_seed(1)
    return SpeechLLM(llm, torch.nn.Linear(UNITS, 32), PROMPT, pad_id=0).eval()


def _adapted(base: LlamaForCausalLM, b_scale: float = 0.5) -> SpeechLLM:
    """``base`` (copied) with LoRA on the attention; B is drawn nonzero unless ``b_scale`` is 0."""
    llm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in llm.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * b_scale)
    return _speech_llm(llm.eval())


def _speech(model: SpeechLLM, lengths: list[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        return [model.projector(torch.randn(n, UNITS, generator=generator)) for n in lengths]


def _kl_by_hand(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


# --- the KL term on constructed logits


def test_kl_is_zero_when_the_distributions_agree() -> None:
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    shifted = logits + torch.arange(4.0)[:, None]  # a constant per row leaves the softmax unchanged
    for direction in ("forward", "reverse"):
        assert torch.allclose(token_kl(logits, shifted, direction), torch.zeros(4), atol=1e-6)


def test_kl_is_positive_when_they_differ() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 7, generator=generator), torch.randn(4, 7, generator=generator)
    for direction in ("forward", "reverse"):
        assert (token_kl(student, teacher, direction) > 1e-3).all()


def test_forward_and_reverse_kl_are_the_two_hand_computed_divergences() -> None:
    teacher, student = [0.7, 0.29, 0.01], [0.4, 0.3, 0.3]
    as_logits = torch.log(torch.tensor([student])), torch.log(torch.tensor([teacher]))

    forward = float(token_kl(*as_logits, "forward"))
    reverse = float(token_kl(*as_logits, "reverse"))

    assert forward == pytest.approx(_kl_by_hand(teacher, student), abs=1e-6)  # KL(teacher || student)
    assert reverse == pytest.approx(_kl_by_hand(student, teacher), abs=1e-6)  # KL(student || teacher)
    assert abs(forward - reverse) > 0.1, "the example is too symmetric to tell the directions apart"


def test_temperature_softens_both_sides_and_scales_by_its_square() -> None:
    student, teacher = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 3.0]])
    t = 2.0
    soft_student = torch.softmax(student / t, -1)[0].tolist()
    soft_teacher = torch.softmax(teacher / t, -1)[0].tolist()

    assert float(token_kl(student, teacher, "forward", t)) == pytest.approx(
        t**2 * _kl_by_hand(soft_teacher, soft_student), abs=1e-6)
    # logits scaled by T at temperature T are the unscaled ones at T = 1, times T^2
    assert torch.allclose(token_kl(t * student, t * teacher, "reverse", t),
                          t**2 * token_kl(student, teacher, "reverse"), atol=1e-6)


# --- the loss mix


def _logits(seed: int) -> torch.Tensor:
    return torch.randn(5, 11, generator=torch.Generator().manual_seed(seed))


def test_kl_weight_mixes_kl_and_nll() -> None:
    targets = torch.tensor([1, 4, 2, 9, 0])
    student, teacher = ResponseLogits(_logits(0), targets), ResponseLogits(_logits(1), targets)
    nll = F.cross_entropy(student.logits, targets)
    kl = token_kl(student.logits, teacher.logits, "forward").mean()

    assert torch.allclose(distill_loss(student, None, DistillConfig(kl_weight=0.0)), nll)
    assert torch.allclose(distill_loss(student, teacher, DistillConfig(kl_weight=1.0)), kl)
    assert torch.allclose(distill_loss(student, teacher, DistillConfig(kl_weight=0.25)), 0.25 * kl + 0.75 * nll)
    with pytest.raises(ValueError, match="different response tokens"):
        distill_loss(student, ResponseLogits(teacher.logits, targets.flip(0)), DistillConfig())


def test_config_names_a_bad_key() -> None:
    assert validate(DistillConfig, {"direction": "reverse", "temperature": 2}, "distill").temperature == 2.0
    with pytest.raises(SpeechLLMError, match="distill: kl_wieght: unknown key"):
        validate(DistillConfig, {"kl_wieght": 0.5}, "distill")
    with pytest.raises(SpeechLLMError, match="distill: direction"):
        validate(DistillConfig, {"direction": "backward"}, "distill")
    with pytest.raises(SpeechLLMError, match="distill: kl_weight"):
        validate(DistillConfig, {"kl_weight": 1.5}, "distill")


# --- the teacher and the response positions


def test_teacher_logits_are_the_base_llms_with_the_adapters_really_off() -> None:
    base = _llm()
    adapted = _adapted(base)
    original = _speech_llm(base)

    with torch.no_grad():
        expected = response_logits(original, original.embed_texts(TRANSCRIPTS), RESPONSES).logits
        student = response_logits(adapted, adapted.embed_texts(TRANSCRIPTS), RESPONSES).logits
    teacher = teacher_logits(adapted, TRANSCRIPTS, RESPONSES).logits
    with torch.no_grad():
        after = response_logits(adapted, adapted.embed_texts(TRANSCRIPTS), RESPONSES).logits

    assert torch.allclose(teacher, expected, atol=1e-6)
    assert (teacher - student).abs().max() > 1e-2, "LoRA changed nothing: the test would not see it left on"
    assert torch.equal(after, student), "the adapters stay off after the teacher pass"
    assert not teacher.requires_grad


def test_student_and_teacher_rows_predict_the_same_response_tokens() -> None:
    """Different prefix lengths (speech of 4, 9, 1 positions; transcripts of 2, 6, 1 tokens), same rows."""
    model = _adapted(_llm())
    speech = _speech(model, [4, 9, 1])

    with torch.no_grad():
        student = response_logits(model, speech, RESPONSES)
    teacher = teacher_logits(model, TRANSCRIPTS, RESPONSES)

    flat = [token for response in RESPONSES for token in response]
    assert student.logits.shape == teacher.logits.shape == (len(flat), 64)
    assert student.targets.tolist() == teacher.targets.tolist() == flat


def test_gathered_rows_are_the_logits_of_each_unpadded_sequence_before_each_response_token() -> None:
    model = _adapted(_llm())
    speech = _speech(model, [4, 9, 1])
    embedding = model.llm.get_input_embeddings()

    with torch.no_grad():
        gathered = response_logits(model, speech, RESPONSES).logits
        by_hand = []
        for inserted, response in zip(speech, RESPONSES, strict=True):
            prefix, suffix = embedding(torch.tensor(PROMPT.prefix)), embedding(torch.tensor(PROMPT.suffix))
            context = torch.cat([prefix, inserted, suffix])
            sequence = torch.cat([context, embedding(torch.tensor(response))])
            by_hand.append(model.llm(inputs_embeds=sequence[None]).logits[0, len(context) - 1: len(sequence) - 1])

    assert torch.allclose(gathered, torch.cat(by_hand), atol=1e-5)


def test_teacher_responses_are_the_base_llms_greedy_answers_closed_by_end_of_turn() -> None:
    base = _llm()
    adapted, original = _adapted(base), _speech_llm(base)
    generation = GenerationConfig(max_new_tokens=6, length_ratio=4.0)

    responses = teacher_responses(adapted, TRANSCRIPTS, generation, batch_size=2)

    with torch.no_grad():
        expected = [original.generate(original.embed_texts([t]), generation)[0] for t in TRANSCRIPTS]
    assert responses == [[*ids, PROMPT.end_of_turn] for ids in expected]


OTHER = Prompt(prefix=[1, 7, 8, 2], suffix=[9, 3], end_of_turn=5)


def test_teacher_responses_in_another_prompt_answer_there_and_leave_the_trained_prompt() -> None:
    base = _llm()
    adapted, original = _adapted(base), _speech_llm(base)
    generation = GenerationConfig(max_new_tokens=6, length_ratio=4.0)

    responses = teacher_responses(adapted, TRANSCRIPTS, generation, batch_size=2, prompt=OTHER)

    original.prompt = OTHER
    with torch.no_grad():
        expected = [original.generate(original.embed_texts([t]), generation)[0] for t in TRANSCRIPTS]
    assert responses == [[*ids, OTHER.end_of_turn] for ids in expected]
    assert responses != teacher_responses(adapted, TRANSCRIPTS, generation, batch_size=2)
    assert adapted.prompt is PROMPT


def test_each_items_prompt_reaches_student_and_teacher() -> None:
    """A frozen LLM reading the transcript itself is its own teacher: M is 0 exactly when both sides read the
    item's prompt; scoring the teacher in the trained prompt instead would make it positive."""
    model = _adapted(_llm(), b_scale=0.0)
    pairs = [Pair(Example("text", t, r, OTHER if i % 2 else None), t)
             for i, (t, r) in enumerate(zip(TRANSCRIPTS, RESPONSES, strict=True))]

    assert misalignment(model, pairs, batch_size=3) == pytest.approx(0.0, abs=1e-6)
    batch = pair_collate(tasu_cps(UNITS, CPSConfig()))(pairs, torch.Generator(), 1.0)
    assert batch.prompts == [None, OTHER, None]
    with torch.no_grad():
        prompted = response_logits(model, model.embed_texts(TRANSCRIPTS), RESPONSES, batch.prompts)
    unprompted = teacher_logits(model, TRANSCRIPTS, RESPONSES)
    assert float(token_kl(prompted.logits, unprompted.logits, "forward").mean()) > 1e-4


# --- forgetting and misalignment


def test_forgetting_is_zero_unadapted_and_positive_once_lora_moves() -> None:
    model = _adapted(_llm(), b_scale=0.0)
    assert forgetting(model, TRANSCRIPTS, RESPONSES, batch_size=2) == pytest.approx(0.0, abs=1e-6)

    with torch.no_grad():
        next(p for name, p in model.named_parameters() if "lora_B" in name).fill_(0.5)
    assert forgetting(model, TRANSCRIPTS, RESPONSES, batch_size=2) > 1e-3


def test_misalignment_on_the_text_itself_is_forgetting_and_reproducible_on_simulated_input() -> None:
    model = _adapted(_llm())
    text = [Pair(Example("text", t, r), t) for t, r in zip(TRANSCRIPTS, RESPONSES, strict=True)]
    simulated = [Pair(Example("cps", [1, 2, 3], r), t) for t, r in zip(TRANSCRIPTS, RESPONSES, strict=True)]
    simulate = tasu_cps(UNITS, CPSConfig())

    f = forgetting(model, TRANSCRIPTS, RESPONSES, batch_size=2)
    assert misalignment(model, text, batch_size=3) == pytest.approx(f, rel=1e-6)
    m = misalignment(model, simulated, batch_size=2, simulate=simulate)
    assert m > 1e-3
    assert misalignment(model, simulated, batch_size=2, simulate=simulate) == m
    with pytest.raises(ValueError, match="simulate"):
        misalignment(model, simulated, batch_size=2)


# --- training through the one loop


def test_distiller_trains_through_the_shared_loop_and_lowers_the_kl(tmp_path: Path) -> None:
    model = _adapted(_llm(), b_scale=0.0)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("projector.") or "lora_" in name)
    speech = [torch.softmax(torch.randn(n, UNITS, generator=torch.Generator().manual_seed(n)), -1) for n in (3, 5, 2)]
    pairs = [Pair(Example("speech", s, r), t) for s, t, r in zip(speech, TRANSCRIPTS, RESPONSES, strict=True)]
    before = misalignment(model, pairs, batch_size=3)

    job = TrainJob(Distiller(model, DistillConfig(temperature=2.0)), pairs, [len(p) for p in pairs],
                   pair_collate(tasu_cps(UNITS, CPSConfig())),
                   loss, tmp_path)
    report = train(job, TrainConfig(steps=20, batch_size=3, lr=1e-2, warmup_steps=1, checkpoint_every=20), _no_track)

    assert report.last_loss < report.first_loss
    assert misalignment(model.eval(), pairs, batch_size=3) < before


def _no_track(items, total, description):  # noqa: ANN001, ANN201
    return items


def test_real_smollm2_teacher_answers_as_the_original_llm_while_its_adapters_are_scrambled() -> None:
    """The packaged SmolLM2-135M-Instruct (converted once into the machine's cache) with LoRA B drawn large: the
    adapted model no longer answers, the teacher (same module, adapters off) still does."""
    from speechllm_cli.core.configs import LLMConfig, LoraSettings
    from speechllm_cli.core.llm import build_prompt, encode_text, end_of_turn_id, load_llm
    from speechllm_cli.stages.speech_llm_io import llm_cache_dir

    llm, tokenizer = load_llm(LLMConfig(lora=LoraSettings()), llm_cache_dir())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in llm.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    template = build_prompt(tokenizer, "Answer the question.", None)
    prompt = Prompt(template.prefix_ids, template.suffix_ids, end_of_turn_id(tokenizer))
    model = SpeechLLM(llm, torch.nn.Linear(UNITS, llm.config.hidden_size), prompt, tokenizer.pad_token_id)
    question = [encode_text(tokenizer, "What is the capital of France?")]
    generation = GenerationConfig(max_new_tokens=12, length_ratio=4.0)

    [answer] = teacher_responses(model, question, generation, batch_size=1)
    with torch.no_grad():
        [adapted] = model.generate(model.embed_texts(question), generation)

    assert answer[-1] == prompt.end_of_turn
    assert "Paris" in tokenizer.decode(answer)
    assert "Paris" not in tokenizer.decode(adapted), "LoRA changed nothing: the test would not see it left on"
