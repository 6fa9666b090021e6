"""Names that become folder or file names inside the experiment folder (splits, systems, tracks, ...).

A name from a config or the command line is joined onto the experiment folder, so ``../x`` or ``/abs``
would write (or delete) outside it. Every such name is checked here, once, when the config is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from speechllm_cli.common.errors import SpeechLLMError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_name(name: str) -> str:
    """``name`` if it is a plain folder name: letters, digits, ``_ . + -``, not starting with a dot."""
    if not _PLAIN.fullmatch(name) or name.endswith(".") or ".." in name:
        raise ValueError(f"{name!r} is not a plain name (letters, digits, _ . + -; no path separators, "
                         "no leading dot)")
    return name


Name = Annotated[str, AfterValidator(check_name)]
"""A config field (or mapping key) whose value names a folder or file of the experiment."""

_CELL_BUDGET = re.compile(r"b[0-9]+(\.[0-9]+)?")


def check_system(system: str) -> str:
    """``system`` if it names an align or distill system (a plain name) or a curriculum-finetune cell
    (``track/scheme/b<budget>``, both plain names)."""
    parts = system.split("/")
    if len(parts) == 3 and _CELL_BUDGET.fullmatch(parts[2]):
        for part in parts[:2]:
            check_name(part)
        return system
    if len(parts) > 1:
        raise ValueError(f"{system!r} is neither a system name nor a cell as track/scheme/b<budget>")
    return check_name(system)


SystemName = Annotated[str, AfterValidator(check_system)]
"""A trained speech LLM: an align or distill system, or a curriculum-finetune cell (``en/curriculum/b25``)."""


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves inside ``root``; every write or delete of a stage goes through a checked path."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise SpeechLLMError(f"{path}: resolves outside the experiment folder {root}")
    return path
