"""Building the speech LLM of an ``align`` system, and saving / loading what it trained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.cache import cache_root
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import load_tensors
from speechllm_cli.stages.curriculum.records import cell_of, cell_weights
from speechllm_cli.stages.runner import Context, changed_outputs, finished

if TYPE_CHECKING:
    from speechllm_cli.core.configs import ModelConfig
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.speech_llm import Prompt, SpeechLLM


@dataclass(frozen=True)
class Interface:
    """Where a speech LLM meets the encoder: TASU's posteriors, or the unified encoder's hidden space (TESU)."""

    feature: str
    """The front-end output (:class:`~speechllm_cli.stages.front_end.Encoded` field) its speech input is."""
    hidden_size: Callable[[Context], int | None]
    """The projector's input width when it reads hidden states; None: posteriors over the encoder's units."""


def _branch_width(context: Context) -> int:
    from speechllm_cli.stages.text_branch import text_branch_width

    return text_branch_width(context)


INTERFACES: dict[str, Interface] = {"posteriors": Interface("lsd", lambda context: None),
                                    "unified": Interface("hidden", _branch_width)}
MODE_INTERFACE = {"cps": "posteriors", "calibrated": "posteriors", "paired": "posteriors", "unified": "unified"}
"""The interface of an align system, by its mode; distill systems and cells start from posterior systems."""


def interface_of(context: Context, system: str) -> Interface:
    align = context.config.align
    mode = align.systems[system].mode if align is not None and system in align.systems else "cps"
    return INTERFACES[MODE_INTERFACE[mode]]


def system_model(context: Context, system: str) -> ModelConfig:
    """The recipe's ``model`` as ``system`` was built: without LoRA for an align system with a frozen LLM
    (``frozen_llm``: the projector alone trains, TASU's own setting)."""
    model, align = context.config.model, context.config.align
    frozen = align is not None and system in align.systems and align.systems[system].frozen_llm
    return model.model_copy(update={"llm": model.llm.model_copy(update={"lora": None})}) if frozen else model


def require_lora(context: Context, system: str, key: str, stage: str) -> None:
    """Stages that continue a system's LoRA cannot start from one trained without it."""
    if system_model(context, system).llm.lora is None and context.config.model.llm.lora is not None:
        raise SpeechLLMError(f"{key}: {system!r} trained its projector only (frozen_llm); {stage} continues LoRA "
                             "systems only")


def require_posteriors(context: Context, system: str, key: str, stage: str) -> None:
    """Stages that fine-tune further read posteriors only so far: a unified start is a one-line error."""
    if interface_of(context, system) is not INTERFACES["posteriors"]:
        raise SpeechLLMError(f"{key}: {system!r} is a unified-encoder system; {stage} reads posteriors only so far")


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


def build_speech_llm(config: ModelConfig, instruction: str, encoder: CTCEncoder,
                     hidden_size: int | None = None) -> tuple[SpeechLLM, object]:
    """A fresh speech LLM (frozen LLM, new projector) prompted with ``instruction``, and the LLM's tokenizer.

    The projector reads posteriors over the encoder's units, or with ``hidden_size`` (the unified interface)
    the encoder's hidden states (``unit-lookup`` then starts from the encoder's own output layer). It lives
    where the LLM was loaded (a GPU when there is one), so decoding needs no training wrapper to move it
    there."""
    from speechllm_cli.core.llm import load_llm
    from speechllm_cli.core.projector import HiddenLookup, UnitEmbedding, build_projector, unit_text_embeddings
    from speechllm_cli.core.speech_llm import SpeechLLM

    llm, tokenizer = load_llm(config.llm, llm_cache_dir())
    embeddings = llm.get_input_embeddings()
    projector = build_projector(encoder.vocab_size, embeddings.embedding_dim, config.projector, hidden_size)
    projector = projector.to(embeddings.weight.device)
    if isinstance(projector, UnitEmbedding):
        projector.init_from_embeddings(unit_text_embeddings(encoder.units(), tokenizer, embeddings))
    if isinstance(projector, HiddenLookup):
        projector.init_from_encoder(encoder.output_layer().to(embeddings.weight.device),
                                    unit_text_embeddings(encoder.units(), tokenizer, embeddings))
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


def trained_outputs(folder: Path) -> list[Path]:
    """What :func:`save_trained` writes into a system's folder (the adapter folder only with LoRA)."""
    return [folder / "projector", folder / "lora"]


def save_trained(model: SpeechLLM, folder: Path, config: ModelConfig) -> None:
    from speechllm_cli.core.projector import save_projector

    save_projector(model.projector, folder / "projector", model.llm.get_input_embeddings().embedding_dim,
                   config.projector)
    if config.llm.lora is not None:
        model.llm.save_pretrained(folder / "lora")


def load_weights(model: SpeechLLM, folder: Path, lora: bool) -> None:
    """Put what :func:`save_trained` wrote in ``folder`` into a freshly built model."""
    model.projector.load_state_dict(load_tensors(folder / "projector" / "model.safetensors", str(model.device)))
    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model.llm, load_tensors(folder / "lora" / "adapter_model.safetensors"))


def require_trained(context: Context, system: str) -> Path:
    """The system's folder, if its unit finished: weights left by a killed or failed run are not a system."""
    folder = system_dir(context, system)
    stage = folder.parent.name
    if not finished(folder):
        raise SpeechLLMError(f"{folder}: {stage} system {system!r} is not trained yet (run {stage} first)")
    changed = changed_outputs(folder, context.exp_dir)
    if changed:
        raise SpeechLLMError(f"{changed[0]}: changed since {stage} trained {system!r} (damaged or replaced); run "
                             f"{stage} again to rebuild it")
    return folder


def load_trained(context: Context, encoder: CTCEncoder, system: str) -> tuple[SpeechLLM, object]:
    """The trained system, prompted with align's instruction; only a finished unit counts (a killed one has no
    marker)."""
    folder = require_trained(context, system)
    config = system_model(context, system)
    model, tokenizer = build_speech_llm(config, context.section("align").instruction, encoder,
                                        interface_of(context, system).hidden_size(context))
    load_weights(model, folder, config.llm.lora is not None)
    return model.eval(), tokenizer
