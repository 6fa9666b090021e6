"""The text branch of the unified-encoder interface (TESU), trained as a unit of ``calibrate``.

Both stages model what the encoder makes of speech so that ``align`` can train from text alone: the
calibration for the posterior interface, the text branch for the unified one. The branch learns from a
split the encoder was trained on (its LSD segments' labels -> their pooled hidden states), needs no
transcript for that, and is saved as a ``from_pretrained``-style folder next to the encoder
(``encoder/text_branch/model``). On the calibration split (held out, with transcripts) the unit then
measures the spread of speech vectors around its predictions (the noise model's scale) and writes the
interface's mismatch report: text-side vectors of the transcripts against the speech-side vectors. How an
align system labels its transcripts for the branch, and how much noise it adds, is the system's own
setting (:class:`TextSideConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import NonNegativeFloat

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json
from speechllm_cli.common.names import Name
from speechllm_cli.core.configs import TextBranchSettings
from speechllm_cli.core.train_config import TrainConfig
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_text_set, load_trained_encoder, text_set_path
from speechllm_cli.stages.runner import Context, Unit

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.encoders import CTCEncoder
    from speechllm_cli.core.feeds import Simulate
    from speechllm_cli.core.text_branch import Pair, TextBranch

Labeler = Callable[[list[list[int]], "torch.Generator"], list[list[int]]]
"""Transcripts' units and the step's generator -> the label sequences the branch reads."""


class TextBranchStageConfig(StrictModel):
    split: Name = "train"
    """Speech whose LSD segments the branch learns from (the encoder's training split: no transcript needed)."""
    model: TextBranchSettings = TextBranchSettings()
    train: TrainConfig = TrainConfig(steps=400, batch_size=32, lr=1e-3, warmup_steps=40, checkpoint_every=100,
                                     log_every=20)


class TextSideConfig(StrictModel):
    """How an align system in ``unified`` mode turns a transcript into text-side vectors (the noise model)."""

    labels: Literal["units", "cps", "calibrated"] = "calibrated"
    """What goes into the branch: the transcript's units as they are, with TASU's label noise (``model.cps``),
    or the labels of the encoder's calibrated simulation at level 1 (its substitutions, deletions,
    insertions and kept blanks: the kind of sequence the branch learnt from; needs ``calibrate``)."""
    noise_scale: NonNegativeFloat = 1.0
    """Gaussian noise at this times the measured spread of speech vectors around the branch's predictions."""


def text_branch_dir(context: Context) -> Path:
    return context.exp_dir / "encoder" / "text_branch"


def text_branch_model_dir(context: Context) -> Path:
    return text_branch_dir(context) / "model"


def _pairs(context: Context, encoder: CTCEncoder, split: str) -> list[Pair]:
    """Every utterance of ``split`` with at least one LSD segment: segment labels and pooled hidden states."""
    from speechllm_cli.core.text_branch import Pair
    from speechllm_cli.stages.front_end import split_posteriors

    encoded = split_posteriors(context, encoder, split, context.config.model.lsd)
    return [Pair(entry.lsd.float().argmax(dim=-1).tolist(), entry.hidden) for entry in
            (encoded[uid] for uid in encoded) if entry.lsd.shape[0] > 0]


def _saved_branch(context: Context) -> Path:
    folder = text_branch_model_dir(context)
    if not (folder / "config.json").is_file():
        raise SpeechLLMError(f"{folder}: no text branch (set calibrate.text_branch and run calibrate first)")
    return folder


def load_text_branch(context: Context) -> TextBranch:
    from speechllm_cli.core.text_branch import TextBranch

    return TextBranch.load(_saved_branch(context))


def text_branch_width(context: Context) -> int:
    """The hidden width the saved branch maps into, read from its config alone."""
    from speechllm_cli.core.text_branch import read_branch_config

    return read_branch_config(_saved_branch(context)).hidden_size


def _unit_labels(context: Context, vocab_size: int) -> Labeler:
    return lambda units, generator: [list(ids) for ids in units]


def _cps_labels(context: Context, vocab_size: int) -> Labeler:
    import torch

    from speechllm_cli.core.posteriors import simulate_labels

    cps = context.config.model.cps
    return lambda units, generator: [
        simulate_labels(torch.tensor(ids, dtype=torch.long, device=generator.device), vocab_size, cps,
                        generator).tolist() for ids in units]


def _calibrated_labels(context: Context, vocab_size: int) -> Labeler:
    from speechllm_cli.stages.calibrate import calibrated_simulator

    simulator = calibrated_simulator(context)

    def labels(units: list[list[int]], generator: torch.Generator) -> list[list[int]]:
        frames, lengths = simulator(units, generator, 1.0)
        return [frames[i, : int(n)].argmax(dim=-1).tolist() for i, n in enumerate(lengths)]

    return labels


LABELERS: dict[str, Callable[[Context, int], Labeler]] = {
    "units": _unit_labels, "cps": _cps_labels, "calibrated": _calibrated_labels}


def text_side(context: Context, side: TextSideConfig, vocab_size: int) -> Simulate:
    """The interface's text side for ``align``: a transcript's units, labelled as ``side`` says, through the
    branch, plus Gaussian noise."""
    from speechllm_cli.core.text_branch import text_vectors

    branch = load_text_branch(context)
    labeler = LABELERS[side.labels](context, vocab_size)
    return lambda ids, generator, progress: text_vectors(branch, labeler(ids, generator), side.noise_scale,
                                                         generator)


def _report(context: Context, encoder: CTCEncoder, branch: TextBranch) -> dict[str, Any]:
    """Speech-side vectors of the calibration split against the text side of its transcripts, for each label
    source without and with the Gaussian noise."""
    import torch

    from speechllm_cli.core.text_branch import text_vectors
    from speechllm_cli.core.vector_mismatch import summarize
    from speechllm_cli.stages.front_end import split_posteriors

    calibrate = context.section("calibrate")
    encoded = split_posteriors(context, encoder, calibrate.split, context.config.model.lsd)
    rows = [(encoder.row_units(row), encoded[row["id"]]) for row in load_text_set(context, calibrate.text_set)
            if row["id"] in encoded and encoded[row["id"]].lsd.shape[0] > 0]
    units = [ids for ids, _ in rows if ids]
    speech = [entry.hidden.float() for ids, entry in rows if ids]
    sides = {"speech (itself)": speech}
    for name, side in (("units", TextSideConfig(labels="units", noise_scale=0)),
                       ("cps labels", TextSideConfig(labels="cps", noise_scale=0)),
                       ("calibrated labels", TextSideConfig(labels="calibrated", noise_scale=0)),
                       ("calibrated labels + noise", TextSideConfig())):
        generator = torch.Generator().manual_seed(0)
        labels = LABELERS[side.labels](context, encoder.vocab_size)(units, generator)
        padded, lengths = text_vectors(branch, labels, side.noise_scale, generator)
        sides[name] = [padded[i, : int(n)] for i, n in enumerate(lengths)]
    figures = {name: summarize(vectors, speech, [len(u) for u in units]) for name, vectors in sides.items()}
    return {"command": context.command, "split": calibrate.split, "reference": "speech (itself)",
            "order": list(sides), "sources": figures,
            "distance": {name: f["dtw_cosine"] for name, f in figures.items()}}


def _train(context: Context, config: TextBranchStageConfig) -> dict[str, Any]:
    from speechllm_cli.core import text_branch
    from speechllm_cli.core.training import TrainJob, seed_everything, train

    calibrate = context.section("calibrate")
    encoder = load_trained_encoder(context)
    pairs = _pairs(context, encoder, config.split)
    if not pairs:
        raise SpeechLLMError(f"calibrate.text_branch.split {config.split!r}: no utterance with an LSD segment")
    seed_everything(config.train.seed)
    branch_config = text_branch.TextBranchConfig(**config.model.model_dump(), vocab_size=encoder.vocab_size,
                                                 hidden_size=pairs[0].target.shape[-1])
    branch = text_branch.TextBranch(branch_config)
    folder = text_branch_dir(context)
    report = train(TrainJob(branch, pairs, [len(p) for p in pairs], text_branch.collate, text_branch.loss, folder),
                   config.train, context.track)
    branch.eval()
    held_out = _pairs(context, encoder, calibrate.split)
    branch.config = branch_config.model_copy(update={"residual_std": text_branch.residual_std(branch, held_out)})
    branch.save(text_branch_model_dir(context))
    mismatch = _report(context, encoder, branch)
    write_json(folder / "report.json", mismatch)
    return {"pairs": len(pairs), "held_out": len(held_out), "steps": report.steps,
            "resumed_from": report.resumed_from, "first_loss": report.first_loss, "last_loss": report.last_loss,
            "seconds": round(report.seconds, 1),
            "distance": {name: round(value, 4) for name, value in mismatch["distance"].items()}}


def text_branch_unit(context: Context, config: TextBranchStageConfig) -> Unit:
    """Runs after the calibration unit, whose simulation its report's calibrated labels come from."""
    from speechllm_cli.stages.calibrate import calibration_model_dir

    calibrate = context.section("calibrate")
    align = context.config.align
    settings = {"text_branch": config.model_dump(mode="json"), "lsd": context.config.model.lsd.model_dump(mode="json"),
                "held_out": [calibrate.split, calibrate.text_set],
                "report": {"cps": context.config.model.cps.model_dump(mode="json"),
                           "calibrated": align.calibrated.model_dump(mode="json") if align else None}}
    inputs = [encoder_dir(context), cuts_path(context, config.split), cuts_path(context, calibrate.split),
              text_set_path(context, calibrate.text_set), calibration_model_dir(context)]
    return Unit("calibrate/text_branch", text_branch_dir(context), settings, inputs, lambda: _train(context, config),
                [text_branch_model_dir(context)])
