"""What every stage shares: the context it runs in, done markers, resolved configs, summaries.

A stage splits its work into units (a split, a text set, a model). A unit is skipped when its
folder holds a ``.done`` marker whose key matches the hash of its config and inputs; otherwise it
runs, and the marker is written last, so a killed unit simply runs again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm_cli.common.config import dump
from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.common.io import file_digest, write_json, write_text
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


def settings_key(settings: dict[str, Any], inputs: list[Path]) -> str:
    """A hash of settings and of the inputs' contents: equal keys mean equal work."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(str(path).encode())
        digest.update(file_digest(path).encode() if path.exists() else b"missing")
    return digest.hexdigest()


def unit_key(unit: Unit) -> str:
    return settings_key(unit.settings, unit.inputs)


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
    outcomes = []
    for unit in units:
        key = unit_key(unit)
        marker = read_marker(unit.out_dir / MARKER)
        if not context.force and marker is not None and marker.get("key") == key:
            outcomes.append(Outcome(unit, marker.get("stats", {}), reused=True))
            continue
        (unit.out_dir / MARKER).unlink(missing_ok=True)
        _claim_partial_work(unit.out_dir, key, context.force)
        started = time.time()
        stats = unit.run()
        write_text(unit.out_dir / "config.yaml", dump(context.config))
        write_json(unit.out_dir / MARKER, {"key": key, "stats": stats, "seconds": round(time.time() - started, 2)})
        (unit.out_dir / IN_PROGRESS).unlink(missing_ok=True)
        outcomes.append(Outcome(unit, stats, reused=False))
    return outcomes


def status(outcome: Outcome) -> str:
    return "up to date" if outcome.reused else "done"
