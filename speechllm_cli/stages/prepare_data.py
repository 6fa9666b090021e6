"""``prepare-data``: corpus -> validated lhotse CutSets in ``<exp>/data/<split>/cuts.jsonl.gz``."""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import PositiveFloat, PositiveInt, model_validator

from speechllm_cli.common.config import StrictModel
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import write_jsonl, write_text
from speechllm_cli.data.audio import MAX_SECONDS, MIN_SECONDS, AudioLimits
from speechllm_cli.data.manifests import BadInputPolicy, SplitReport, build_cuts, write_cuts
from speechllm_cli.data.sources import (
    SOURCES,
    KaldiConfig,
    LibriSpeechConfig,
    MiniConfig,
    SlurpConfig,
    Source,
    TsvConfig,
    TtsTextConfig,
)
from speechllm_cli.stages.runner import CUTS, Context, StageResult, Unit, run_units, status


class SourceSpec(StrictModel):
    source: str
    """Which corpus source builds the splits: mini, librispeech, slurp, kaldi, tsv or tts_text."""
    mini: MiniConfig | None = None
    librispeech: LibriSpeechConfig | None = None
    slurp: SlurpConfig | None = None
    kaldi: KaldiConfig | None = None
    tsv: TsvConfig | None = None
    tts_text: TtsTextConfig | None = None

    @model_validator(mode="after")
    def _source_configured(self) -> SourceSpec:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r} (known: {', '.join(SOURCES)})")
        if getattr(self, self.source) is None:
            raise ValueError(f"source is {self.source!r} but the {self.source!r} section is missing")
        return self

    @property
    def source_config(self) -> StrictModel:
        return getattr(self, self.source)


class PrepareDataConfig(SourceSpec):
    on_bad_input: BadInputPolicy = BadInputPolicy.fail
    sample_rate: PositiveInt = 16000
    min_seconds: PositiveFloat = MIN_SECONDS
    """Shorter utterances are bad input (``too_short``); ``decode FILE`` refuses shorter files too."""
    max_seconds: PositiveFloat = MAX_SECONDS
    """Longer utterances are bad input (``too_long``), and so are such files given to ``decode``. The default
    is Whisper's 30 s window; raise it only for an encoder without one (conformer-ctc)."""
    extra: list[SourceSpec] = []
    """More corpora whose splits join the main source's, e.g. an SLU task beside an ASR corpus. Kept apart
    from the main source so that adding one leaves the existing splits (and all work built on them) as is."""

    @model_validator(mode="after")
    def _limits_ordered(self) -> PrepareDataConfig:
        if self.min_seconds >= self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) must be below max_seconds ({self.max_seconds})")
        return self

    @property
    def audio_limits(self) -> AudioLimits:
        return AudioLimits(self.min_seconds, self.max_seconds)


def _prepare_split(context: Context, config: PrepareDataConfig, source: Source, split: str) -> dict[str, Any]:
    out_dir = context.exp_dir / "data" / split
    cuts, report = build_cuts(source.entries(split, context.track), config.on_bad_input, config.sample_rate, split,
                              config.audio_limits)
    if not report.utterances:
        _refuse_empty(source, split, report)
    write_cuts(cuts, out_dir / CUTS, context.exp_dir)
    skipped = out_dir / "skipped.tsv"
    if report.skipped_lines:
        write_text(skipped, "reason\twhere\tdetail\n" + "\n".join(report.skipped_lines) + "\n")
    else:
        skipped.unlink(missing_ok=True)
    return report.as_dict()


def _refuse_empty(source: Source, split: str, report: SplitReport) -> None:
    """A split of no utterances would be a finished split that every later stage fails on far from its cause."""
    inputs = ", ".join(str(path) for path in source.inputs(split)) or f"split {split!r}"
    skipped = sum(report.skipped.values())
    reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(report.skipped.items()))
    detail = f"all {skipped} skipped ({reasons})" if skipped else "it lists none"
    raise SpeechLLMError(f"{inputs}: no utterance for split {split!r}: {detail}")


def _write_corpus(context: Context, source: Source, name: str) -> dict[str, Any]:
    count = write_jsonl(context.exp_dir / "data" / "corpora" / f"{name}.jsonl", source.corpus_rows(name))
    return {"sentences": count}


def _units(context: Context, config: PrepareDataConfig, spec: SourceSpec, source: Source) -> list[Unit]:
    settings = {"source": spec.source, "config": spec.source_config.model_dump(mode="json"),
                "sample_rate": config.sample_rate, "on_bad_input": config.on_bad_input.value}
    limits = {"min_seconds": config.min_seconds, "max_seconds": config.max_seconds}
    data_dir = context.exp_dir / "data"
    units = [Unit(f"data/{split}", data_dir / split, {**settings, **limits, "split": split}, source.inputs(split),
                  partial(_prepare_split, context, config, source, split), [data_dir / split / CUTS])
             for split in source.splits()]
    units += [Unit(f"data/corpora/{name}", data_dir / "corpora" / name, {**settings, "corpus": name}, [],
                   partial(_write_corpus, context, source, name)) for name in source.corpus_names()]
    return units


def _skips(stats: dict[str, Any]) -> str:
    return ", ".join(f"{reason}={count}" for reason, count in stats.get("skipped", {}).items()) or "0"


def _all_units(context: Context, config: PrepareDataConfig) -> list[Unit]:
    """Units of the main source and every extra one; two sources may not write the same split."""
    units: list[Unit] = []
    for spec in [config, *config.extra]:
        source = SOURCES[spec.source](spec.source_config, context.exp_dir / "data")
        units += _units(context, config, spec, source)
    names = [unit.name for unit in units]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash is not None:
        raise SpeechLLMError(f"prepare_data: two sources both write {clash} (rename a split or corpus)")
    return units


def run(context: Context) -> StageResult:
    config: PrepareDataConfig = context.section("prepare_data")
    outcomes = run_units(context, _all_units(context, config))
    rows, utts, hours, skipped = [], 0, 0.0, 0
    for outcome in outcomes:
        stats = outcome.stats
        if "utterances" in stats:
            utts, hours = utts + stats["utterances"], hours + stats["hours"]
            skipped += sum(stats["skipped"].values())
            rows.append([outcome.unit.name, str(stats["utterances"]), f"{stats['hours']:.3f}",
                         str(stats["resampled"]), _skips(stats), status(outcome)])
        else:
            rows.append([outcome.unit.name, f"{stats['sentences']} text", "-", "-", "-", status(outcome)])
    reused = sum(o.reused for o in outcomes)
    summary = (f"prepare-data: {len(outcomes)} outputs ({reused} up to date), {utts} utterances, {hours:.2f} h, "
               f"{skipped} skipped -> {context.exp_dir / 'data'}")
    return StageResult(summary, ["output", "utterances", "hours", "resampled", "skipped", "status"], rows)
