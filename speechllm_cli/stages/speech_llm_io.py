"""Building the speech LLM of an ``align`` system, and saving / loading what it trained."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.cache import cache_root
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.stages.curriculum.records import cell_of, cell_weights
from speechllm_cli.stages.runner import MARKER, Context

if TYPE_CHECKING:
    from speechllm_cli.core.configs import ModelConfig
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM


def llm_cache_dir() -> Path:
    """Converted LLM checkpoints, shared by all experiments of a machine (``$SPEECHLLM_CACHE`` overrides)."""
    return cache_root() / "llm"


def speech_llm_names(context: Context) -> list[str]:
    """Every speech LLM system of the recipe: align's, then distill's."""
    align, distill = context.config.align, context.config.distill
    return [*(align.systems if align is not None else []), *(distill.systems if distill is not None else [])]


def system_dir(context: Context, system: str) -> Path:
    """Where a trained speech LLM lives: ``distill/<name>`` for a distilled system, a cell's last phase, else
    ``align/<name>``."""
    cell = cell_of(context, system)
    if cell is not None:
        return cell_weights(context, cell)
    distill = context.config.distill
    stage = "distill" if distill is not None and system in distill.systems else "align"
    return context.exp_dir / stage / system


def build_speech_llm(config: ModelConfig, instruction: str, encoder: CTCEncoder) -> tuple[SpeechLLM, object]:
    """A fresh speech LLM (frozen LLM, new projector) prompted with ``instruction``, and the LLM's tokenizer.

    The projector lives where the LLM was loaded (a GPU when there is one), so decoding needs no training
    wrapper to move it there."""
    from speechllm_cli.core.llm import load_llm
    from speechllm_cli.core.projector import UnitLookup, build_projector, unit_text_embeddings
    from speechllm_cli.core.speech_llm import SpeechLLM

    llm, tokenizer = load_llm(config.llm, llm_cache_dir())
    embeddings = llm.get_input_embeddings()
    projector = build_projector(encoder.vocab_size, embeddings.embedding_dim, config.projector).to(
        embeddings.weight.device)
    if isinstance(projector, UnitLookup):
        projector.init_from_embeddings(unit_text_embeddings(encoder.units(), tokenizer, embeddings))
    prompt = prompt_for(tokenizer, instruction, config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prompt.end_of_turn
    return SpeechLLM(llm, projector, prompt, pad), tokenizer


def prompt_for(tokenizer: Any, instruction: str, config: ModelConfig) -> Prompt:
    """The chat prompt around the inserted positions for ``instruction``: a trained system can be asked
    another task by swapping its ``prompt``."""
    from speechllm_cli.core.llm import build_prompt, end_of_turn_id
    from speechllm_cli.core.speech_llm import Prompt

    template = build_prompt(tokenizer, instruction, config.llm.system_prompt)
    return Prompt(template.prefix_ids, template.suffix_ids, end_of_turn_id(tokenizer))


def save_trained(model: SpeechLLM, folder: Path, vocab_size: int, config: ModelConfig) -> None:
    from speechllm_cli.core.projector import save_projector

    save_projector(model.projector, folder / "projector", vocab_size, model.llm.get_input_embeddings().embedding_dim,
                   config.projector)
    if config.llm.lora is not None:
        model.llm.save_pretrained(folder / "lora")


def load_weights(model: SpeechLLM, folder: Path, lora: bool) -> None:
    """Put what :func:`save_trained` wrote in ``folder`` into a freshly built model."""
    from speechllm_cli.core.projector import load_projector

    model.projector.load_state_dict(load_projector(folder / "projector").state_dict())
    if lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model.llm, load_file(str(folder / "lora" / "adapter_model.safetensors")))


def load_trained(context: Context, encoder: CTCEncoder, system: str) -> tuple[SpeechLLM, object]:
    """The trained system, prompted with align's instruction; only a finished unit counts (a killed one has no
    marker)."""
    folder = system_dir(context, system)
    if not (folder / MARKER).is_file():
        stage = folder.parent.name
        raise SpeechLLMError(f"{folder}: {stage} system {system!r} is not trained yet (run {stage} first)")
    model, tokenizer = build_speech_llm(context.config.model, context.section("align").instruction, encoder)
    load_weights(model, folder, context.config.model.llm.lora is not None)
    return model.eval(), tokenizer
