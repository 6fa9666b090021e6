"""``align``: train the projector (and optionally LoRA) that feeds CTC posteriors to the LLM.

Three modes share the model, the loop and the loss (cross-entropy on the transcript tokens only):
- ``cps``: TASU's text-only alignment. Posteriors are simulated from text sets; no audio is read, only
  the encoder's unit inventory (its tokenizer);
- ``calibrated``: text-only too, but the posteriors are simulated from the encoder's own calibration
  (``calibrate``: its measured confusions, losses, insertions and real frame shapes), at an error level
  that may follow a schedule over training (a difficulty curriculum); still no audio is read;
- ``paired``: the audio-trained baseline TASU compares against. Posteriors are the frozen encoder's
  real LSD posteriors of a split's speech;
- ``unified``: TESU-style text-only alignment through the unified-encoder interface. The projector reads
  the encoder's hidden states pooled over LSD's segments; in training, a transcript's units reach that
  space through the text branch ``calibrate`` trained (with its noise model), so no audio is read either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import LevelSchedule, SimulatorConfig
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.stages.calibrate import calibrated_simulator, calibration_model_dir
from speechllm_cli.stages.inputs import encoder_dir, load_text_set, load_trained_encoder, text_set_path
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.speech_llm_io import (
    build_speech_llm,
    interface_of,
    save_trained,
    system_dir,
    system_model,
    trained_outputs,
)
from speechllm_cli.stages.tasks import InstructionTask, check_shares, task_rows, task_targets, text_sets_read
from speechllm_cli.stages.text_branch import TextSideConfig, text_branch_model_dir

if TYPE_CHECKING:
    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.feeds import Example, Simulate
    from speechllm_cli.core.speech_llm import SpeechLLM


class AlignSystemConfig(StrictModel):
    mode: Literal["cps", "calibrated", "paired", "unified"]
    text_sets: list[Name] = []
    """cps, calibrated, unified: the text sets to simulate the encoder's output from. paired: the set holding
    the split's transcripts."""
    tasks: list[InstructionTask] = []
    """Text-only modes: train on several instructions (multi-task alignment), each from its own text, instead
    of align's instruction over ``text_sets``."""
    split: Name | None = None
    """paired: the split whose speech gives real posteriors."""
    levels: list[tuple[float, float]] = [(0.0, 1.0)]
    """calibrated: the simulated error level as (training progress 0..1, level) points, linear in between:
    0 is error-free real-shaped frames, 1 the measured encoder. The default holds the measured level."""
    text_side: TextSideConfig | None = None
    """unified: how transcripts become text-side vectors (labels, noise); None: the defaults."""
    frozen_llm: bool = False
    """Train the projector alone, the LLM frozen (TASU's own setting), even when ``model.llm`` has LoRA."""

    @model_validator(mode="after")
    def _inputs_given(self) -> AlignSystemConfig:
        if self.tasks:
            if self.text_sets or self.mode == "paired":
                raise ValueError("tasks replace text_sets, in the text-only modes (cps, calibrated, unified)")
            check_shares(self.tasks)
        elif not self.text_sets:
            raise ValueError("text_sets is empty")
        if self.mode == "paired" and (self.split is None or len(self.text_sets) != 1):
            raise ValueError("paired mode needs a split and exactly one text set (its transcripts)")
        LevelSchedule(self.levels)
        if self.text_side is not None and self.mode != "unified":
            raise ValueError("text_side is for unified mode only")
        return self

    @property
    def side(self) -> TextSideConfig | None:
        """unified: the text side in effect (its defaults when not set); None in the other modes."""
        return (self.text_side or TextSideConfig()) if self.mode == "unified" else None

    def fingerprint(self) -> dict[str, Any]:
        """The settings a trained system depends on: ``text_side`` in effect for unified systems, absent for the
        other modes, and ``tasks`` and ``frozen_llm`` only when set, so that systems keep the keys they were
        trained under."""
        side = self.side
        exclude = {"text_side"} | (set() if self.tasks else {"tasks"}) | (set() if self.frozen_llm else {"frozen_llm"})
        return {**self.model_dump(mode="json", exclude=exclude),
                **({"text_side": side.model_dump(mode="json")} if side is not None else {})}


class AlignConfig(StrictModel):
    """How the systems are trained; what they are made of (LLM, projector, LSD, CPS) is the recipe's ``model``."""

    instruction: str = "Transcribe the speech."
    calibrated: SimulatorConfig = SimulatorConfig()
    """The calibrated simulation's priors and error cap, for systems in calibrated mode."""
    systems: dict[Name, AlignSystemConfig]
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Training arithmetic: bf16 autocast or fp32; auto picks bf16 on CUDA and fp32 on CPUs (where bf16
    autocast measured 0.58x the speed of fp32, bench/align_bench.py)."""
    max_target_tokens: PositiveInt = 96
    """Longer transcripts are left out of training (counted)."""
    train: TrainConfig = TrainConfig(steps=300, batch_size=8, lr=1e-3, warmup_steps=30)


def text_items(context: Context, sets: list[str], encoder: CTCEncoder, tokenizer: Any,
                limit: int) -> tuple[list[Example], int]:
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.llm import target_ids

    items, left_out = [], 0
    for name in sets:
        for row in load_text_set(context, name):
            units, target = encoder.row_units(row), target_ids(tokenizer, row["target"])
            if units and len(target) <= limit:
                items.append(Example("cps", units, target))
            else:
                left_out += 1
    return items, left_out


def task_items(context: Context, system: AlignSystemConfig, config: AlignConfig, encoder: CTCEncoder,
               model: SpeechLLM, tokenizer: Any) -> tuple[list[Example], int]:
    """A multi-task system's examples (``stages.tasks``): ``share`` of the examples its training reads (steps x
    batch size) per task, each carrying its instruction's prompt."""
    from speechllm_cli.core.configs import GenerationConfig
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.stages.speech_llm_io import prompt_for

    generation = GenerationConfig(max_new_tokens=config.max_target_tokens - 1, length_ratio=8.0, no_repeat_ngram=3)
    parts = task_rows(context, system.tasks, config.train.steps * config.train.batch_size, config.train.seed,
                      lambda instruction: prompt_for(tokenizer, instruction, context.config.model))
    items, left_out = [], 0
    for part in parts:
        for row, target in zip(part.rows, task_targets(part, model, tokenizer, generation, 16), strict=True):
            units = encoder.row_units(row)
            if units and len(target) <= config.max_target_tokens:
                items.append(Example("cps", units, target, part.prompt))
            else:
                left_out += 1
    return items, left_out


def _paired_items(context: Context, system: AlignSystemConfig, config: AlignConfig, encoder: CTCEncoder,
                  tokenizer: Any) -> tuple[list[Example], int]:
    from speechllm_cli.core.feeds import Example
    from speechllm_cli.core.llm import target_ids
    from speechllm_cli.stages.front_end import split_posteriors

    assert system.split is not None
    posteriors = split_posteriors(context, encoder, system.split, context.config.model.lsd)
    items, left_out = [], 0
    for row in load_text_set(context, system.text_sets[0]):
        entry = posteriors.stored(row["id"]) if row["id"] in posteriors else None
        target = target_ids(tokenizer, row["target"])
        if entry is not None and entry.shape[0] > 0 and len(target) <= config.max_target_tokens:
            items.append(Example("speech", entry, target))
        else:
            left_out += 1
    return items, left_out


def _tasu(context: Context, config: AlignConfig, system: AlignSystemConfig, vocab_size: int) -> Simulate:
    from speechllm_cli.core import feeds

    return feeds.tasu_cps(vocab_size, context.config.model.cps)


def _unified(context: Context, config: AlignConfig, system: AlignSystemConfig, vocab_size: int) -> Simulate:
    from speechllm_cli.stages.text_branch import text_side

    if context.section("calibrate").text_branch is None:
        raise SpeechLLMError("align: unified mode needs calibrate.text_branch (the text branch it trains through)")
    assert system.side is not None
    return text_side(context, system.side, vocab_size)


def _calibrated(context: Context, config: AlignConfig, system: AlignSystemConfig, vocab_size: int) -> Simulate:
    simulator = calibrated_simulator(context)
    schedule = LevelSchedule(system.levels)
    return lambda ids, generator, progress: simulator(ids, generator, schedule.level_at(progress))


SIMULATIONS: dict[str, Callable[[Context, AlignConfig, AlignSystemConfig, int], Simulate]] = {
    "cps": _tasu, "paired": _tasu, "calibrated": _calibrated, "unified": _unified}


def simulation(context: Context, config: AlignConfig, system: AlignSystemConfig, vocab_size: int) -> Simulate:
    """How a system's text reaches the encoder's output space: TASU's CPS, the encoder's calibrated simulation at
    the system's scheduled error level, or the unified interface's text branch (paired systems read speech;
    CPS is what their collate would draw for text items, which they have none of)."""
    return SIMULATIONS[system.mode](context, config, system, vocab_size)


def _train_system(context: Context, config: AlignConfig, name: str) -> dict[str, Any]:
    from speechllm_cli.core import feeds
    from speechllm_cli.core.training import TrainJob, seed_everything, train

    system = config.systems[name]
    encoder = load_trained_encoder(context)
    vocab_size = encoder.vocab_size
    seed_everything(config.train.seed)
    model_config = system_model(context, name)
    model, tokenizer = build_speech_llm(model_config, config.instruction, encoder,
                                        interface_of(context, name).hidden_size(context))
    if system.mode == "paired":
        items, left_out = _paired_items(context, system, config, encoder, tokenizer)
    elif system.tasks:
        items, left_out = task_items(context, system, config, encoder, model, tokenizer)
    else:
        items, left_out = text_items(context, system.text_sets, encoder, tokenizer, config.max_target_tokens)
    if not items:
        raise SpeechLLMError(f"align.systems.{name}: no usable training examples")
    del encoder
    folder = system_dir(context, name)
    collate = feeds.collate_fn(simulation(context, config, system, vocab_size))
    job = TrainJob(model, items, [len(e) for e in items], collate, feeds.loss, folder, config.precision)
    report = train(job, config.train, context.track)
    save_trained(model, folder, model_config)
    return {"mode": system.mode, "examples": len(items), "left_out": left_out, "steps": report.steps,
            "resumed_from": report.resumed_from, "first_loss": report.first_loss, "last_loss": report.last_loss,
            "seconds": round(report.seconds, 1)}


def _inputs(context: Context, system: AlignSystemConfig) -> list[Path]:
    paths = [text_set_path(context, name) for name in text_sets_read(system.text_sets, system.tasks)]
    paths.append(encoder_dir(context))
    if system.mode == "calibrated":
        paths.append(calibration_model_dir(context))
    if system.mode == "unified":
        paths.append(text_branch_model_dir(context))
    if system.side is not None and system.side.labels == "calibrated":
        paths.append(calibration_model_dir(context))
    if system.mode == "paired":
        assert system.split is not None
        paths.append(context.exp_dir / "data" / system.split / "cuts.jsonl.gz")
    return paths


def run(context: Context) -> StageResult:
    config: AlignConfig = context.section("align")
    shared = {**config.model_dump(mode="json", exclude={"systems"}),
              "model": context.config.model.model_dump(mode="json")}
    units = [Unit(f"align/{name}", system_dir(context, name), {**shared, "system": system.fingerprint()},
                  _inputs(context, system), lambda name=name: _train_system(context, config, name),
                  trained_outputs(system_dir(context, name)))
             for name, system in config.systems.items()]
    outcomes = run_units(context, units)
    rows = [[o.unit.name, o.stats["mode"], str(o.stats["examples"]), str(o.stats["left_out"]), str(o.stats["steps"]),
             f"{o.stats['first_loss']:.3f} -> {o.stats['last_loss']:.3f}", status(o)] for o in outcomes]
    summary = f"align: {len(outcomes)} systems -> {context.exp_dir / 'align'}"
    return StageResult(summary, ["system", "mode", "examples", "left out", "steps", "loss", "status"], rows)
