"""Typed, validated configuration.

Recipe configs are YAML files with one section per stage. Each section is a pydantic model that
forbids unknown keys, so a typo is an error naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from speechllm_cli.common.errors import SpeechLLMError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, dict | list) or error["type"] == "value_error":
        return f"{key}: {message}"
    return f"{key}: {message} (got {value!r})"


def validate(model: type[ModelT], data: Any, source: str) -> ModelT:
    """Build ``model`` from ``data`` or raise a one-line error naming ``source`` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise SpeechLLMError(f"{source}: {_describe(first)}{more}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax problems into one-line errors."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpeechLLMError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise SpeechLLMError(f"{path}: config is not valid UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SpeechLLMError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpeechLLMError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _node(data: dict[str, Any], dotted: str, origin: str) -> tuple[dict[str, Any], str]:
    """The mapping that holds ``dotted``'s last key (created on the way), and that key."""
    keys = dotted.strip().split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise SpeechLLMError(f"{origin}: {key} is not a section")
        node = child
    return node, keys[-1]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set section.key=value`` overrides; values are parsed as YAML (``3`` is an int, ``[a, b]`` a list)."""
    result = copy.deepcopy(data)
    for override in overrides:
        dotted, sep, raw = override.partition("=")
        if not sep or not dotted.strip():
            raise SpeechLLMError(f"--set {override!r}: expected section.key=value")
        node, key = _node(result, dotted, f"--set {override!r}")
        try:
            node[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SpeechLLMError(f"--set {override!r}: value is not valid YAML") from None
    return result


def apply_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys to values taken literally (a path or name from a command-line option is never parsed)."""
    result = copy.deepcopy(data)
    for dotted, value in values.items():
        node, key = _node(result, dotted, dotted)
        node[key] = value
    return result


def dump(model: BaseModel) -> str:
    """The resolved config as YAML, as saved beside each stage's outputs."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
