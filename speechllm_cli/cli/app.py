"""The ``speechllm`` command: parse options, load the recipe config, run one stage, print its summary."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

import speechllm_cli
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.stages.recipe import load_recipe
from speechllm_cli.stages.registry import STAGES
from speechllm_cli.stages.runner import Context, StageResult

T = TypeVar("T")
out = Console()
err = Console(stderr=True)

app = typer.Typer(
    name="speechllm",
    help="Build speech LLMs mostly from text: staged recipes from data preparation to scoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OnBadInput(str, Enum):
    fail = "fail"
    skip = "skip"


RecipeOpt = Annotated[str | None, typer.Option(
    "--recipe", "-r", metavar="NAME_OR_PATH",
    help="Recipe name (a folder under recipes/) or path to a recipe folder or config.yaml.")]
ExpDirOpt = Annotated[Path | None, typer.Option(
    "--exp-dir", metavar="DIR", help="Experiment folder for all outputs. Default: exp/<recipe name>.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="SECTION.KEY=VALUE",
    help="Override a config value (YAML-parsed), e.g. --set prepare_data.mini.seed=3. Repeatable.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even when the stage's outputs are up to date.")]
BadInputOpt = Annotated[OnBadInput | None, typer.Option(
    "--on-bad-input", case_sensitive=False,
    help="fail: stop at the first bad entry with a one-line message; skip: skip bad entries and count them "
         "by reason. Default: the config's on_bad_input (fail).")]


def _progress(items: Iterable[T], total: int, description: str) -> Iterable[T]:
    return track(items, total=total, description=description, console=err, transient=True,
                 disable=not err.is_terminal)


def _print(result: StageResult) -> None:
    if result.rows:
        table = Table(box=None, header_style="bold")
        for index, column in enumerate(result.columns):
            table.add_column(column, no_wrap=index == 0)
        for row in result.rows:
            table.add_row(*row)
        out.print(table)
    out.print(result.summary, soft_wrap=True)


def _context(recipe: str | None, exp_dir: Path | None, sets: list[str] | None, force: bool,
             extra: list[str] | None) -> Context:
    loaded = load_recipe(recipe, [*(sets or []), *(extra or [])])
    command = shlex.join(["speechllm", *sys.argv[1:]])
    return Context(loaded.config, exp_dir or Path("exp") / loaded.config.name, force, _progress, command)


def _execute(stage: str, recipe: str | None, exp_dir: Path | None, sets: list[str] | None, force: bool,
             extra: list[str] | None = None) -> None:
    """Run one stage; a :class:`SpeechLLMError` becomes one line on stderr and exit status 1."""
    try:
        context = _context(recipe, exp_dir, sets, force, extra)
        _print(STAGES[stage](context))
    except SpeechLLMError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"speechllm {speechllm_cli.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Build speech LLMs mostly from text: staged recipes from data preparation to scoring."""


@app.command("prepare-data")
def prepare_data(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    on_bad_input: BadInputOpt = None,
    kaldi_dir: Annotated[Path | None, typer.Option(
        "--kaldi-dir", metavar="DIR", help="Import a Kaldi data folder (wav.scp, text, optional segments, "
                                           "utt2spk) as split --split, without writing a recipe.")] = None,
    tsv: Annotated[Path | None, typer.Option(
        "--tsv", metavar="FILE", help="Import a TSV of path<TAB>text[<TAB>target] lines as split --split.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", metavar="NAME", help="Split name for --kaldi-dir or --tsv imports.")] = None,
    corpus_dir: Annotated[Path | None, typer.Option(
        "--corpus-dir", metavar="DIR", help="An existing LibriSpeech copy (for recipes whose source is "
                                            "librispeech); overrides prepare_data.librispeech.corpus_dir.")] = None,
) -> None:
    """Corpora -> validated lhotse CutSets in <exp>/data/<split>/cuts.jsonl.gz."""
    extra = [] if on_bad_input is None else [f"prepare_data.on_bad_input={on_bad_input.value}"]
    if (kaldi_dir or tsv) and not split:
        err.print("[bold red]error:[/] --kaldi-dir and --tsv need --split NAME")
        raise typer.Exit(2)
    if kaldi_dir and tsv:
        err.print("[bold red]error:[/] give either --kaldi-dir or --tsv, not both")
        raise typer.Exit(2)
    for kind, path in (("kaldi", kaldi_dir), ("tsv", tsv)):
        if path is not None:
            key = "dir" if kind == "kaldi" else "file"
            extra += [f"prepare_data.source={kind}", f"prepare_data.{kind}.{key}={path}",
                      f"prepare_data.{kind}.split={split}"]
    if corpus_dir is not None:
        extra.append(f"prepare_data.librispeech.corpus_dir={corpus_dir}")
    _execute("prepare-data", recipe, exp_dir, set_, force, extra)


@app.command("prepare-text")
def prepare_text(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    on_bad_input: BadInputOpt = None,
) -> None:
    """Normalised text-only sets (<exp>/text/<set>.jsonl) and the CTC sentencepiece tokenizer."""
    extra = [] if on_bad_input is None else [f"prepare_text.on_bad_input={on_bad_input.value}"]
    _execute("prepare-text", recipe, exp_dir, set_, force, extra)


_STAGE_HELP = {
    "train-encoder": "Train the CTC acoustic encoder on a recipe's paired speech (or import a pretrained one).",
    "calibrate": "Measure the encoder's errors and frame shapes on a paired dev split (for calibrated simulation) "
                 "and report simulated against real posteriors.",
    "distill": "SALAD: cross-modal distillation from the text LLM, with active selection.",
    "score": "WER/CER and SLU metrics; writes RESULTS.md.",
}


def _register(name: str) -> None:
    """A stage whose only options are the common ones; one not built yet says so and exits 1."""

    def command(recipe: RecipeOpt = None, exp_dir: ExpDirOpt = None, set_: SetOpt = None,
                force: ForceOpt = False) -> None:
        if name not in STAGES:
            err.print(f"[bold red]error:[/] speechllm {name}: not implemented yet")
            raise typer.Exit(1)
        _execute(name, recipe, exp_dir, set_, force)

    command.__doc__ = _STAGE_HELP[name] + ("" if name in STAGES else " (Not implemented yet.)")
    app.command(name)(command)


for _name in _STAGE_HELP:
    _register(_name)


@app.command("align")
def align(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    system: Annotated[list[str] | None, typer.Option(
        "--system", help="Train only this system of align.systems (e.g. tasu, calibrated). Repeatable.")] = None,
) -> None:
    """Train projectors (and LoRA) that feed CTC posteriors to the LLM: from text only (TASU's or the calibrated
    simulation) or from real posteriors (paired, TTS). Without --system, every system of the recipe."""
    extra = ([f"align.systems={json.dumps(_only(recipe, set_, '--system', 'align', 'systems', system))}"]
             if system else [])
    _execute("align", recipe, exp_dir, set_, force, extra)


def _only(recipe: str | None, sets: list[str] | None, option: str, section: str, field: str,
          names: list[str]) -> dict[str, object]:
    """``section.field`` of the recipe narrowed to ``names``, for ``--set`` (an unknown name is an error)."""
    try:
        config = getattr(load_recipe(recipe, sets or []).config, section)
        if config is None:
            raise SpeechLLMError(f"{option}: the recipe has no {section} section")
        known = getattr(config, field)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SpeechLLMError(f"{option} {unknown[0]}: not in {section}.{field} (known: {', '.join(known)})")
    except SpeechLLMError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    return {name: known[name].model_dump(mode="json") for name in names}


@app.command("curriculum-finetune")
def curriculum_finetune(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    track: Annotated[list[str] | None, typer.Option(
        "--track", help="Run only this track of curriculum_finetune.tracks (e.g. en, en-de). Repeatable.")] = None,
    scheme: Annotated[list[str] | None, typer.Option(
        "--scheme", help="Run only this scheme: text-only, direct-mix, curriculum, tasu-then-speech or a name "
                         "under curriculum_finetune.schedules. Repeatable.")] = None,
    budget: Annotated[list[float] | None, typer.Option(
        "--budget", help="Run only this speech budget (percent of the training utterances). Repeatable.")] = None,
) -> None:
    """Fine-tune under limited speech (text-only, direct mixing, curriculum, TASU then speech) and decode the
    test set with speech and with text input. Without --track/--scheme/--budget, runs the whole sweep."""
    extra = [f"curriculum_finetune.{key}={json.dumps(values)}"
             for key, values in (("schemes", scheme), ("budgets", budget)) if values]
    if track:
        extra.append("curriculum_finetune.tracks="
                     + json.dumps(_only(recipe, set_, "--track", "curriculum_finetune", "tracks", track)))
    _execute("curriculum-finetune", recipe, exp_dir, set_, force, extra)


@app.command("decode")
def decode(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Audio files to transcribe (printed as file<TAB>hypothesis) instead of the recipe's test splits.",
        show_default=False)] = None,
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    system: Annotated[str, typer.Option(
        "--system", help="System for AUDIO files: ctc or an align system name.")] = "tasu",
) -> None:
    """Zero-shot ASR of the test splits (speech -> encoder -> LSD -> projector -> LLM), or of given files."""
    if not files:
        _execute("decode", recipe, exp_dir, set_, force)
        return
    from speechllm_cli.stages.decode import transcribe_files

    try:
        for path, text in transcribe_files(_context(recipe, exp_dir, set_, force, None), files, system):
            typer.echo(f"{path}\t{text}")
    except SpeechLLMError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command("import-model")
def import_model(
    source: Annotated[Path, typer.Argument(help="The checkpoint folder to convert (e.g. a CTranslate2 Whisper "
                                                "folder with model.bin, config.json, tokenizer.json).")],
    target: Annotated[Path, typer.Argument(help="The Hugging Face folder to write (must not exist).")],
    kind: Annotated[str, typer.Option(
        "--format", help="Format of SOURCE: ct2-whisper (CTranslate2 / faster-whisper Whisper models).")] = "ct2-whisper",
) -> None:
    """Convert a checkpoint into a Hugging Face folder that from_pretrained (and every recipe) loads."""
    from speechllm_cli.stages.import_model import import_model as convert

    try:
        written = convert(kind, source, target)
    except SpeechLLMError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"import-model: {source} ({kind}) -> {written}", soft_wrap=True)
