"""What every stage shares: the context it runs in, done markers, resolved configs, summaries.

A stage splits its work into units (a split, a text set, a model). A unit is skipped when its
folder holds a ``.done`` marker whose key matches the hash of its config and inputs; otherwise it
runs, and the marker is written last, so a killed unit simply runs again. From the marker's first read to
its writing the unit holds its lock (``common.locks``): a second command on the same unit stops in one line.

Keys are the one scheme every stage and cache uses: settings plus the *content* of each input, named by
its path relative to the experiment folder. A split manifest's content
includes the audio files it points to, so re-recorded audio under the same names is new work.

On several processes (``--num-processes``), one rule: the main process runs every unit exactly as a lone
process would and alone writes (outputs, markers, logs, checkpoints, config.yaml); every other process
walks the same units and, for each, waits for the main process's word. A unit with joint work (training,
sharded decoding) calls the others in when that work starts: they run the unit themselves from the top,
reading what the main process prepared and left on disk, take their part, and stop where it ends
(``common.distributed``). Then every process gets the unit's outcome once its marker is written, so all end
with the same view of what is done. A unit without joint work is the main process's alone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common import distributed
from speechllm_cli.common.config import dump
from speechllm_cli.common.digests import DigestCache
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import file_digest, write_json, write_text
from speechllm_cli.common.locks import unit_lock
from speechllm_cli.common.names import inside
from speechllm_cli.data.sources import Track, no_progress

if TYPE_CHECKING:
    from speechllm_cli.stages.recipe import RecipeConfig

MARKER = ".done"
IN_PROGRESS = ".in-progress"
PARTIAL = "checkpoint"
"""Partial work of a unit (training checkpoints); kept across a kill, dropped when the config changes."""


@dataclass(frozen=True)
class Context:
    config: RecipeConfig
    exp_dir: Path
    force: bool = False
    track: Track = no_progress
    command: str = ""
    """The command line that runs this stage, recorded with results so every number names its origin."""

    def section(self, name: str) -> Any:
        value = getattr(self.config, name)
        if value is None:
            raise SpeechLLMError(f"recipe {self.config.name!r} has no {name} section in its config")
        return value


@dataclass(frozen=True)
class Unit:
    name: str
    out_dir: Path
    settings: dict[str, Any]
    """Everything in the config that decides this unit's output."""
    inputs: list[Path]
    run: Callable[[], dict[str, Any]]
    """Does the work and returns the statistics kept in the marker and shown in the summary."""
    outputs: list[Path] = field(default_factory=list)
    """What later stages read of it (files or folders): their digests go into the marker, and a unit whose
    outputs were since deleted, damaged or replaced is not up to date, so it rebuilds them."""


@dataclass(frozen=True)
class Outcome:
    unit: Unit
    stats: dict[str, Any]
    reused: bool


@dataclass
class StageResult:
    summary: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


CUTS = "cuts.jsonl.gz"
_digest_caches: dict[Path, DigestCache] = {}


def _cached_digests(paths: list[Path], root: Path) -> list[str]:
    """Through the experiment's digest cache: unchanged files (audio, outputs) are read once, not by every stage
    and run."""
    if root not in _digest_caches:
        _digest_caches[root] = DigestCache(root)
    return _digest_caches[root].files(paths)


def _manifest_audio(path: Path, root: Path) -> list[Path]:
    """The audio files a manifest names; relative names are below the experiment folder ``root``."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    sources = {source["source"] for row in rows for source in row.get("recording", {}).get("sources", [])
               if source.get("type") == "file"}
    return [root / source for source in sorted(sources)]


def input_digest(path: Path, root: Path) -> str:
    """Content hash of one input: a file, a folder, or a split manifest together with its audio."""
    if not path.exists():
        return "missing"
    if path.name != CUTS:
        return file_digest(path)
    digest = hashlib.sha256(file_digest(path).encode())
    audio = _manifest_audio(path, root)
    present = [file for file in audio if file.is_file()]
    found = dict(zip(present, _cached_digests(present, root), strict=True))
    for file in audio:
        digest.update(found[file].encode() if file in found else b"missing")
    return digest.hexdigest()


def input_digests(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    """Digests by path relative to ``root`` (the experiment folder) where the input lives inside it."""
    base = root.resolve()
    named = {}
    for path in paths:
        resolved = path.resolve()
        name = str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(path)
        named[name] = input_digest(path, root)
    return named


def settings_key(settings: dict[str, Any], digests: dict[str, str] | None = None) -> str:
    """A hash of settings and of input digests: equal keys mean equal work."""
    payload = {"settings": settings, "inputs": digests or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def unit_key(unit: Unit, root: Path) -> str:
    return settings_key(unit.settings, input_digests(root, unit.inputs))


def finished(out_dir: Path) -> bool:
    """Whether a unit's outputs may be read: its marker is there (a failed or killed run removed or never
    wrote it, whatever it left beside)."""
    return read_marker(out_dir / MARKER) is not None


def changed_outputs(out_dir: Path, root: Path) -> list[Path]:
    """The outputs a finished unit's marker recorded that are no longer as recorded (deleted, damaged,
    replaced): a later stage names them instead of failing inside a loader."""
    marker = read_marker(out_dir / MARKER) or {}
    return [root / name for name, digest in marker.get("outputs", {}).items()
            if _tree_digest(root / name, root) != digest]


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _claim_partial_work(out_dir: Path, key: str, force: bool) -> None:
    """Resume partial work only if it was started for this very key; otherwise start clean."""
    claim = out_dir / IN_PROGRESS
    previous = claim.read_text(encoding="utf-8").strip() if claim.is_file() else None
    if force or previous != key:
        shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    write_text(claim, key + "\n")


def run_units(context: Context, units: list[Unit]) -> list[Outcome]:
    if distributed.world_size() > 1:
        distributed.join()
        if not distributed.is_main():
            return [_follow(unit) for unit in units]
    outcomes = []
    for unit in units:
        outcome = _run(context, unit)
        distributed.share((outcome.stats, outcome.reused))
        outcomes.append(outcome)
    return outcomes


def _run(context: Context, unit: Unit) -> Outcome:
    inside(context.exp_dir, unit.out_dir)
    with unit_lock(context.exp_dir, unit.out_dir, context.command):
        return _run_locked(context, unit)


def _run_locked(context: Context, unit: Unit) -> Outcome:
    key = unit_key(unit, context.exp_dir)
    marker = read_marker(unit.out_dir / MARKER)
    if not context.force and marker is not None and marker.get("key") == key and _outputs_kept(context, unit,
                                                                                                 marker):
        return Outcome(unit, marker.get("stats", {}), reused=True)
    (unit.out_dir / MARKER).unlink(missing_ok=True)
    created = _first_missing(unit.out_dir, context.exp_dir)
    _claim_partial_work(unit.out_dir, key, context.force)
    started = time.time()
    try:
        with distributed.leading():
            stats = unit.run()
    except BaseException:
        _tidy_failed(unit.out_dir, created)
        _restore_untouched(context, unit, marker)
        raise
    write_text(unit.out_dir / "config.yaml", dump(context.config))
    write_json(unit.out_dir / MARKER, {"key": key, "stats": stats, "seconds": round(time.time() - started, 2),
                                       "outputs": output_digests(unit, context.exp_dir)})
    (unit.out_dir / IN_PROGRESS).unlink(missing_ok=True)
    return Outcome(unit, stats, reused=False)


def _restore_untouched(context: Context, unit: Unit, marker: dict[str, Any] | None) -> None:
    """A run that failed before changing any output (a config error found at its start, a missing input) leaves
    the finished work it found finished: its outputs are still as its marker recorded them."""
    recorded = (marker or {}).get("outputs") or {}
    if marker is not None and any(d != "missing" for d in recorded.values()) and _outputs_kept(context, unit, marker):
        write_json(unit.out_dir / MARKER, marker)


def _first_missing(out_dir: Path, root: Path) -> Path | None:
    """The outermost folder of ``out_dir`` below ``root`` that this run creates, if any."""
    missing = None
    for folder in (out_dir, *out_dir.parents):
        if folder == root or folder.exists():
            break
        missing = folder
    return missing


def _tidy_failed(out_dir: Path, created: Path | None) -> None:
    """A unit that failed before it left any work to resume leaves nothing behind: no claim, and none of the
    folders it created (work it did leave, e.g. checkpoints, keeps its claim so that a rerun resumes it)."""
    claim = out_dir / IN_PROGRESS
    if claim.is_file() and [p.name for p in out_dir.iterdir()] == [IN_PROGRESS]:
        claim.unlink()
    if created is None:
        return
    for folder in (out_dir, *out_dir.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def output_digests(unit: Unit, root: Path) -> dict[str, str]:
    """The content of a unit's outputs, each file through the digest cache (a check costs a stat per file)."""
    return {str(path.relative_to(root)): _tree_digest(path, root) for path in unit.outputs}


def _tree_digest(path: Path, root: Path) -> str:
    if not path.exists():
        return "missing"
    if path.name == CUTS:
        return input_digest(path, root)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file, content in zip(files, _cached_digests(files, root), strict=True):
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0{content}\n".encode())
    return digest.hexdigest()


def _outputs_kept(context: Context, unit: Unit, marker: dict[str, Any]) -> bool:
    """Whether the outputs are as the marker recorded them. A marker from before outputs were recorded is
    given them now if every output is there (its unit is not redone for that alone)."""
    now = output_digests(unit, context.exp_dir)
    if "outputs" in marker:
        return bool(marker["outputs"] == now)
    if "missing" in now.values():
        return False
    write_json(unit.out_dir / MARKER, {**marker, "outputs": now})
    return True


def _follow(unit: Unit) -> Outcome:
    """A unit on a process other than the main one: its joint work, if the main process shares any, then the
    main process's outcome."""
    message = distributed.share()
    if message == distributed.JOINT_WORK:
        with distributed.following():
            unit.run()
        message = distributed.share()
    stats, reused = message
    return Outcome(unit, stats, reused)


def status(outcome: Outcome) -> str:
    return "up to date" if outcome.reused else "done"
