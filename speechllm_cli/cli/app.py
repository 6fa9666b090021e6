"""The ``speechllm`` command: parse options, load the recipe config, run one stage, print its summary.

Stages, configs and models are imported only when a command runs, so ``--help`` answers at once (torch
and transformers take seconds to import). Values of options are taken literally, and messages are printed
without markup interpretation, since both carry user paths and names.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text

import speechllm_cli
from speechllm_cli.common import device, distributed
from speechllm_cli.common.errors import SpeechLLMError

if TYPE_CHECKING:
    from speechllm_cli.stages.runner import Context, StageResult

T = TypeVar("T")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
_debug = False

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
    help="Override a config value (the value is read as YAML), e.g. --set prepare_data.mini.seed=3. Repeatable.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even when the stage's outputs are up to date.")]
ProcessesOpt = Annotated[int, typer.Option(
    "--num-processes", metavar="N",
    help="Train with N data-parallel processes on this machine (one per GPU, or sharing the CPU cores). Each "
         "takes train.batch_size items per micro-batch, so a step sees N times as many; only the first one "
         "writes.")]
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
            table.add_row(*(Text(cell) for cell in row))
        out.print(table)
    out.print(Text(result.summary), soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on one line of stderr (the message literally) and give the exit to raise."""
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code)


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a failure the user can fix is one line and exit 1 (``--debug`` adds the traceback)."""
    try:
        return action()
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume")
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - every failure becomes one line; --debug shows the rest
        if _debug:
            traceback.print_exc()
        raise _fail(_describe(error)) from None


def _describe(error: Exception) -> str:
    if isinstance(error, SpeechLLMError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return f"unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)"


Values = dict[str, Any]
"""Config values given by command-line options, by dotted key: taken literally, never parsed."""


def _context(recipe: str | None, exp_dir: Path | None, sets: list[str] | None, force: bool,
             values: Values | None, command: str | None = None) -> Context:
    from speechllm_cli.stages.recipe import load_recipe
    from speechllm_cli.stages.runner import Context

    loaded = load_recipe(recipe, sets or [], values or {})
    device.choose(loaded.config.device, lambda line: err.print(Text(line), soft_wrap=True))
    folder = exp_dir or Path("exp") / loaded.config.name
    if folder.exists() and not folder.is_dir():
        raise SpeechLLMError(f"--exp-dir {folder}: is a file, not a folder")
    return Context(loaded.config, folder, force, _progress, command or shlex.join(["speechllm", *sys.argv[1:]]))


def _execute(stage: str, recipe: str | None, exp_dir: Path | None, sets: list[str] | None, force: bool,
             values: Values | None = None, command: str | None = None) -> None:
    """Run one stage and print its summary; ``command`` is recorded with its results (default: this one)."""
    from speechllm_cli.stages.registry import STAGES

    _guarded(lambda: _print(STAGES[stage](_context(recipe, exp_dir, sets, force, values, command))))


def _relaunch(processes: int) -> None:
    """Start this command again as each of ``processes`` processes and exit with them, unless it is one of
    them already (started so here, or by torchrun or accelerate launch)."""
    if processes < 1:
        raise _fail(f"--num-processes: at least 1 process (got {processes})", 2)
    if processes > 1 and distributed.world_size() == 1:
        raise typer.Exit(distributed.launch(sys.argv[1:], processes))


def _version(value: bool) -> None:
    if value:
        out.print(f"speechllm {speechllm_cli.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         debug: Annotated[bool, typer.Option("--debug", help="Show the traceback behind an error message.")] = False,
         ) -> None:
    """Build speech LLMs mostly from text: staged recipes from data preparation to scoring."""
    global _debug
    _debug = debug
    distributed.adopt_slurm()
    # Hugging Face's own bars ("Loading weights" on every model load) would interleave with the stages' progress
    # and tables on stderr; a user who wants them sets the variable to 0.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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
        "--tsv", metavar="FILE", help="Import a TSV of path<TAB>text lines as split --split.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", metavar="NAME", help="Split name for --kaldi-dir or --tsv imports.")] = None,
    corpus_dir: Annotated[Path | None, typer.Option(
        "--corpus-dir", metavar="DIR", help="An existing LibriSpeech copy (for recipes whose source is "
                                            "librispeech); overrides prepare_data.librispeech.corpus_dir.")] = None,
) -> None:
    """Corpora -> validated lhotse CutSets in <exp>/data/<split>/cuts.jsonl.gz."""
    values: Values = {} if on_bad_input is None else {"prepare_data.on_bad_input": on_bad_input.value}
    if (kaldi_dir or tsv) and not split:
        raise _fail("--kaldi-dir and --tsv need --split NAME", 2)
    if kaldi_dir and tsv:
        raise _fail("give either --kaldi-dir or --tsv, not both", 2)
    for kind, key, path in (("kaldi", "dir", kaldi_dir), ("tsv", "file", tsv)):
        if path is not None:
            values |= {"prepare_data.source": kind, f"prepare_data.{kind}.{key}": str(path),
                       f"prepare_data.{kind}.split": split}
    if corpus_dir is not None:
        values["prepare_data.librispeech.corpus_dir"] = str(corpus_dir)
    _execute("prepare-data", recipe, exp_dir, set_, force, values)


@app.command("prepare-text")
def prepare_text(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    on_bad_input: BadInputOpt = None,
) -> None:
    """Normalised text-only sets (<exp>/text/<set>.jsonl) and the CTC sentencepiece tokenizer."""
    values = {} if on_bad_input is None else {"prepare_text.on_bad_input": on_bad_input.value}
    _execute("prepare-text", recipe, exp_dir, set_, force, values)


_STAGE_HELP = {
    "train-encoder": "Train the CTC acoustic encoder on a recipe's paired speech (or import a pretrained one).",
    "calibrate": "Measure the encoder's errors and frame shapes on a paired dev split (for calibrated simulation) "
                 "and report simulated against real posteriors.",
    "score": "WER/CER and SLU metrics; writes RESULTS.md.",
}


def _register(name: str) -> None:
    """A stage whose only options are the common ones."""

    def command(recipe: RecipeOpt = None, exp_dir: ExpDirOpt = None, set_: SetOpt = None,
                force: ForceOpt = False) -> None:
        _execute(name, recipe, exp_dir, set_, force)

    command.__doc__ = _STAGE_HELP[name]
    app.command(name)(command)


@app.command("train-encoder", help=_STAGE_HELP["train-encoder"])
def train_encoder(recipe: RecipeOpt = None, exp_dir: ExpDirOpt = None, set_: SetOpt = None, force: ForceOpt = False,
                  num_processes: ProcessesOpt = 1) -> None:
    _relaunch(num_processes)
    _execute("train-encoder", recipe, exp_dir, set_, force)


_register("calibrate")


@app.command("align")
def align(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    system: Annotated[list[str] | None, typer.Option(
        "--system", help="Train only this system of align.systems (e.g. tasu, calibrated). Repeatable.")] = None,
    num_processes: ProcessesOpt = 1,
) -> None:
    """Train projectors (and LoRA) that feed CTC posteriors to the LLM: from text only (TASU's or the calibrated
    simulation) or from real posteriors (paired, TTS). Without --system, every system of the recipe."""
    _relaunch(num_processes)
    values = {"align.systems": _only(recipe, set_, "--system", "align", "systems", system)} if system else {}
    _execute("align", recipe, exp_dir, set_, force, values)


def _only(recipe: str | None, sets: list[str] | None, option: str, section: str, field: str,
          names: list[str]) -> Any:
    """``section.field`` of the recipe narrowed to ``names`` (an unknown name is an error)."""

    def narrowed() -> Any:
        from speechllm_cli.stages.recipe import load_recipe

        config = getattr(load_recipe(recipe, sets or [], {}).config, section)
        if config is None:
            raise SpeechLLMError(f"{option}: the recipe has no {section} section")
        known = getattr(config, field)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SpeechLLMError(f"{option} {unknown[0]}: not in {section}.{field} (known: {', '.join(known)})")
        if isinstance(known, dict):
            return {name: known[name].model_dump(mode="json") for name in names}
        return list(names)

    return _guarded(narrowed)


@app.command("decode")
def decode(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Audio files to transcribe (printed as file<TAB>hypothesis) instead of the recipe's test splits.",
        show_default=False)] = None,
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    system: Annotated[list[str] | None, typer.Option(
        "--system", help="With FILEs: the one system that transcribes them (ctc, a search, an align system, a "
                         "cascade or a peer such as whisper; default tasu). Without: decode only this system of "
                         "decode.systems. Repeatable without FILEs.")] = None,
    instruction: Annotated[str | None, typer.Option(
        "--instruction", metavar="TEXT",
        help="With FILEs: ask this instead of a transcript (e.g. 'Answer the question in one word.'); speech LLMs "
             "and cascades only. Test splits take theirs from decode.tasks.", show_default=False)] = None,
    num_processes: Annotated[int, typer.Option(
        "--num-processes", metavar="N",
        help="Decode the test splits with N processes on this machine (one per GPU, or sharing the CPU cores), "
             "each taking every N-th utterance; the hypotheses are merged and written by the first.")] = 1,
) -> None:
    """Zero-shot ASR of the test splits (speech -> encoder -> LSD -> projector -> LLM) and the answers to their
    task splits (decode.tasks), or the transcripts of given files or answers about them (--instruction)."""
    if not files:
        if instruction is not None:
            raise _fail("--instruction: give FILEs to ask (a test split's instruction is set in decode.tasks)", 2)
        _relaunch(num_processes)
        values = {"decode.systems": _only(recipe, set_, "--system", "decode", "systems", system)} if system else {}
        _execute("decode", recipe, exp_dir, set_, force, values)
        return
    if system is not None and len(system) > 1:
        raise _fail("--system: give one system to transcribe FILEs", 2)

    def transcribe() -> None:
        from speechllm_cli.stages.decode import transcribe_files

        context = _context(recipe, exp_dir, set_, force, None)
        for path, text in transcribe_files(context, files, system[0] if system else "tasu", instruction):
            typer.echo(f"{path}\t{text}")

    _guarded(transcribe)


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
    num_processes: ProcessesOpt = 1,
) -> None:
    """Fine-tune under limited speech (text-only, direct mixing, curriculum, TASU then speech) and decode the
    test set with speech and with text input. Without --track/--scheme/--budget, runs the whole sweep."""
    _relaunch(num_processes)
    values: Values = {f"curriculum_finetune.{key}": chosen
                      for key, chosen in (("schemes", scheme), ("budgets", budget)) if chosen}
    if track:
        values["curriculum_finetune.tracks"] = _only(recipe, set_, "--track", "curriculum_finetune", "tracks", track)
    _execute("curriculum-finetune", recipe, exp_dir, set_, force, values)


@app.command("distill")
def distill(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    system: Annotated[list[str] | None, typer.Option(
        "--system", help="Train only this system of distill.systems, and the distill systems it continues when "
                         "they are not trained yet. Repeatable.")] = None,
    num_processes: ProcessesOpt = 1,
) -> None:
    """Distil the original LLM reading transcripts into an align system reading speech (SALAD), then measure
    the text-speech gap (forgetting F, misalignment M, speech and text accuracy) of every distilled system
    and the align system under it. Without --system, every system of the recipe."""
    _relaunch(num_processes)
    values = {"distill.systems": _only(recipe, set_, "--system", "distill", "systems",
                                       _continued(recipe, set_, system))} if system else {}
    _execute("distill", recipe, exp_dir, set_, force, values)


def _continued(recipe: str | None, sets: list[str] | None, names: list[str]) -> list[str]:
    """``names`` and every distill system they continue (``init``), in the recipe's order."""

    def chains() -> list[str]:
        from speechllm_cli.stages.recipe import load_recipe

        config = load_recipe(recipe, sets or [], {}).config.distill
        systems = config.systems if config is not None else {}
        wanted, todo = set(), list(names)
        while todo:
            if (name := todo.pop()) not in wanted:
                wanted.add(name)
                todo += [systems[name].init] if name in systems and systems[name].init in systems else []
        return [name for name in systems if name in wanted] + [name for name in names if name not in systems]

    return _guarded(chains)


_register("score")

PIPELINE = ["prepare-data", "prepare-text", "train-encoder", "calibrate", "align", "decode", "curriculum-finetune",
            "score"]
"""The stages of a recipe in order; ``run`` numbers them from 1, as ``recipes/<name>/run.sh`` does."""


@app.command("run")
def run(
    recipe: RecipeOpt = None,
    exp_dir: ExpDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    stage: Annotated[int, typer.Option("--stage", help="First stage to run (" + ", ".join(
        f"{number} {name}" for number, name in enumerate(PIPELINE, 1)) + ").")] = 1,
    stop_stage: Annotated[int, typer.Option("--stop-stage", help="Last stage to run.")] = len(PIPELINE),
    num_processes: ProcessesOpt = 1,
) -> None:
    """Run a recipe's stages in order, ESPnet style (what recipes/<name>/run.sh calls); stops at the first
    stage that fails. Options go to every stage; stage-only options need the stage's own command. With
    --num-processes every stage runs on the same processes (the main one alone where a stage has no shared
    work)."""
    if not 1 <= stage <= stop_stage <= len(PIPELINE):
        raise _fail(f"--stage {stage} --stop-stage {stop_stage}: the stages are 1-{len(PIPELINE)}, the first "
                    "not after the last", 2)
    _relaunch(num_processes)
    common = [*(["--recipe", recipe] if recipe else []), *(["--exp-dir", str(exp_dir)] if exp_dir else []),
              *(arg for value in set_ or [] for arg in ("--set", value)), *(["--force"] if force else [])]
    for number, name in enumerate(PIPELINE, 1):
        if stage <= number <= stop_stage:
            command = shlex.join(["speechllm", name, *common])
            err.print(Text(f"== stage {number}: {command}"), soft_wrap=True)
            _execute(name, recipe, exp_dir, set_, force, command=command)


@app.command("import-model")
def import_model(
    source: Annotated[Path, typer.Argument(help="The checkpoint folder to convert (e.g. a CTranslate2 Whisper "
                                                "folder with model.bin, config.json, tokenizer.json).")],
    target: Annotated[Path, typer.Argument(help="The Hugging Face folder to write (must not exist).")],
    kind: Annotated[str, typer.Option(
        "--format",
        help="Format of SOURCE: ct2-whisper (CTranslate2 / faster-whisper Whisper models).")] = "ct2-whisper",
) -> None:
    """Convert a checkpoint into a Hugging Face folder that from_pretrained (and every recipe) loads."""
    from speechllm_cli.stages.import_model import import_model as convert

    written = _guarded(lambda: convert(kind, source, target))
    out.print(Text(f"import-model: {source} ({kind}) -> {written}"), soft_wrap=True)
