"""``calibrate``: measure what the encoder does to each unit on paired speech, and report the mismatch.

Runs after ``train-encoder``. On a paired split the encoder was not trained on (``dev`` by default; a test
split is refused, so no statistic ever comes from test data) it aligns the encoder's real LSD frames with
the reference units and writes the :mod:`~speechllm_cli.core.calibration` artifact next to the encoder
(``encoder/calibration/model``), from which ``align`` systems in ``calibrated`` mode simulate without
reading audio. It also writes the mismatch report (``encoder/calibration/report.json``, a plot under
``plots/``): real frames of the calibration split, of any ``compare`` split (the training split shows what
the ``paired`` system trains on), TASU's CPS and the calibrated simulation of the same transcripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PositiveInt

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_json
from speechllm_cli.common.names import Name
from speechllm_cli.stages.inputs import cuts_path, encoder_dir, load_text_set, load_trained_encoder, text_set_path
from speechllm_cli.stages.runner import Context, StageResult, Unit, run_units, status
from speechllm_cli.stages.text_branch import TextBranchStageConfig, text_branch_unit

if TYPE_CHECKING:
    import torch

    from speechllm_cli.core.calibration import CalibratedSimulator, Calibration
    from speechllm_cli.core.encoders import CTCEncoder

MISMATCH_PLOT = "plots/posterior_mismatch.png"


class CalibrateConfig(StrictModel):
    split: Name = "dev"
    """The paired split to measure the encoder on: not one it trained on, never a test split."""
    text_set: Name = "dev"
    """The text set holding that split's transcripts."""
    compare: dict[Name, Name] = {}
    """More paired splits to report beside it, split -> its text set (e.g. ``train: train``)."""
    top_k: PositiveInt = 16
    """Units kept per frame template (the rest of a frame's mass is spread evenly)."""
    max_templates: PositiveInt = 200_000
    seed: int = 0
    text_branch: TextBranchStageConfig | None = None
    """Also train the unified-encoder interface's text branch (TESU), for ``align`` systems in ``unified`` mode."""


def calibration_dir(context: Context) -> Path:
    return context.exp_dir / "encoder" / "calibration"


def calibration_model_dir(context: Context) -> Path:
    return calibration_dir(context) / "model"


def calibrated_simulator(context: Context) -> CalibratedSimulator:
    """The encoder's calibrated simulation with align's settings, for every stage that simulates from text."""
    from speechllm_cli.core.calibration import CalibratedSimulator, load_calibration

    folder = calibration_model_dir(context)
    if not (folder / "calibration.json").is_file():
        raise SpeechLLMError(f"{folder}: no calibration of the encoder (run calibrate first)")
    align = context.config.align
    return CalibratedSimulator(load_calibration(folder), align.calibrated if align is not None else None)


def paired_frames(context: Context, encoder: CTCEncoder, split: str,
                  text_set: str) -> tuple[list[torch.Tensor], list[list[int]], int]:
    """Real LSD frames and reference units of a split's utterances; the third value counts the text set's
    rows left out (no audio in the split, no frame kept by LSD, or no unit)."""
    from speechllm_cli.stages.front_end import split_posteriors

    posteriors = split_posteriors(context, encoder, split, context.config.model.lsd)
    frames, references, left_out = [], [], 0
    for row in load_text_set(context, text_set):
        entry, units = posteriors.get(row["id"]), encoder.row_units(row)
        if entry is None or entry.lsd.shape[0] == 0 or not units:
            left_out += 1
            continue
        frames.append(entry.lsd.float())
        references.append(units)
    return frames, references, left_out


def _report(context: Context, encoder: CTCEncoder, frames: list[torch.Tensor], references: list[list[int]],
            calibration: Calibration) -> dict[str, Any]:
    import torch

    from speechllm_cli.core.calibration import CalibratedSimulator
    from speechllm_cli.core.mismatch import distance, frame_stats
    from speechllm_cli.core.posteriors import simulate_posteriors

    config: CalibrateConfig = context.section("calibrate")
    align = context.config.align
    vocab, blank = encoder.vocab_size, context.config.model.lsd.blank_id
    sources = {f"real {config.split}": frame_stats(frames, references, vocab, blank).summary()}
    for split, text_set in config.compare.items():
        real, units, _ = paired_frames(context, encoder, split, text_set)
        sources[f"real {split}"] = frame_stats(real, units, vocab, blank).summary()
    simulations = {
        "tasu cps": lambda g: simulate_posteriors(references, vocab, context.config.model.cps, g),
        "calibrated (level 1)": lambda g: CalibratedSimulator(
            calibration, align.calibrated if align else None)(references, g, 1.0)}
    for name, simulate in simulations.items():
        padded, lengths = simulate(torch.Generator().manual_seed(config.seed))
        simulated = [padded[i, : int(n)] for i, n in enumerate(lengths)]
        sources[name] = frame_stats(simulated, references, vocab, blank).summary()
    reference = sources[f"real {config.split}"]
    return {"command": context.command, "reference": f"real {config.split}", "order": list(sources),
            "sources": sources,
            "distance": {name: distance(reference, stats) for name, stats in sources.items()}}


def _calibrate(context: Context) -> dict[str, Any]:
    from speechllm_cli.core.calibration import measure, save_calibration
    from speechllm_cli.metrics.mismatch_report import plot_mismatch

    config: CalibrateConfig = context.section("calibrate")
    encoder = load_trained_encoder(context)
    frames, references, left_out = paired_frames(context, encoder, config.split, config.text_set)
    if not frames:
        raise SpeechLLMError(f"calibrate.split {config.split!r}: no utterance with both frames and reference units")
    calibration = measure(frames, references, encoder.vocab_size, context.config.model.lsd.blank_id, config.top_k,
                          config.max_templates, config.seed)
    save_calibration(calibration, calibration_model_dir(context))
    report = _report(context, encoder, frames, references, calibration)
    write_json(calibration_dir(context) / "report.json", report)
    plot_mismatch(report, context.exp_dir / MISMATCH_PLOT)
    return {"utterances": len(frames), "left_out": left_out, "templates": len(calibration.templates),
            **{k: round(v, 4) for k, v in calibration.rates().items()},
            "distance": {k: round(v, 4) for k, v in report["distance"].items()}}


def _check_split(context: Context, config: CalibrateConfig) -> None:
    decode = context.config.decode
    tests = set(decode.splits) if decode is not None else set()
    branch = [config.text_branch.split] if config.text_branch is not None else []
    for split in [config.split, *config.compare, *branch]:
        if split in tests:
            raise SpeechLLMError(f"calibrate: split {split!r} is a decode test split; calibration statistics "
                                 "must never come from test data")


def run(context: Context) -> StageResult:
    config: CalibrateConfig = context.section("calibrate")
    _check_split(context, config)
    align = context.config.align
    settings = {"calibrate": config.model_dump(mode="json", exclude={"text_branch"}),
                "lsd": context.config.model.lsd.model_dump(mode="json"),
                "report": {"cps": context.config.model.cps.model_dump(mode="json"),
                           "calibrated": align.calibrated.model_dump(mode="json") if align else None}}
    splits = {config.split: config.text_set, **config.compare}
    inputs = [encoder_dir(context), *(cuts_path(context, s) for s in splits),
              *(text_set_path(context, t) for t in splits.values())]
    units = [Unit("calibrate", calibration_dir(context), settings, inputs, lambda: _calibrate(context),
                  [calibration_model_dir(context)])]
    if config.text_branch is not None:
        units.append(text_branch_unit(context, config.text_branch))
    outcome, *branch = run_units(context, units)
    stats = outcome.stats
    rows = [[name, f"{value:.3f}"] for name, value in stats["distance"].items()]
    rows += [[f"measured {name}", f"{stats[name]:.3f}"] for name in
             ("correct", "substitution", "soft", "deletion", "insertion")]
    rows += [[f"unified: {name} (DTW cosine)", f"{value:.3f}"] for o in branch for name, value in
             o.stats["distance"].items()]
    summary = (f"calibrate: {stats['utterances']} utterances of {config.split} ({stats['left_out']} left out), "
               f"{stats['templates']} frame templates -> {calibration_dir(context)} ({status(outcome)})")
    summary += "".join(f"; text branch: {o.stats['pairs']} utterances of {config.text_branch.split}, loss "
                       f"{o.stats['first_loss']:.3f} -> {o.stats['last_loss']:.3f} ({status(o)})" for o in branch
                       if config.text_branch is not None)
    return StageResult(summary, ["mismatch distance to real / rate", "value"], rows)
