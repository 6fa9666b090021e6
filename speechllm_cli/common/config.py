"""Typed, validated configuration.

Recipe configs are YAML files with one section per stage. Each section is a pydantic model that
forbids unknown keys, so a typo is an error naming the key instead of a silently ignored setting.

The YAML itself is read with limits: a key given twice in one mapping is an error (YAML's last-one-wins
hid the first), and aliases may repeat a value but not multiply one past :data:`MAX_VALUES` values in all:
nine nested levels of nine aliases each (a 10 KB file) expand to 387 million, which took 8 GB before any
check ran. The count follows shared values without expanding them, so it costs what the file is.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from speechllm_cli.common.errors import SpeechLLMError

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_VALUES = 100_000
"""The most values (mappings, lists and scalars) a config may expand to; the recipes here have under 1,000."""


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key repeated in one mapping."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _expanded_size(data: Any) -> int:
    """How many values ``data`` holds once every alias is written out; a value shared by aliases is counted
    as often as it is used, but visited once."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        if id(value) not in sizes:
            children = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(child) for child in children)
        return sizes[id(value)]

    return size(data)


def load_yaml(text: str) -> Any:
    """Parse YAML as ``yaml.safe_load`` does, within the limits above (``yaml.YAMLError`` otherwise)."""
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if _expanded_size(data) > MAX_VALUES:
        raise yaml.YAMLError(f"aliases expand it to more than {MAX_VALUES:,} values")
    return data


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (alone or as an option of a union such as ``int | None``)."""
    if annotation in (int, float):
        return True
    options = [a for a in get_args(annotation) if a is not type(None)]
    return get_origin(annotation) in (Union, UnionType) and bool(options) and all(a in (int, float) for a in options)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads ``true`` as 1 for a number; ``batch_size: true`` is a mistake, not a batch of one."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _numeric(field.annotation):
            raise ValueError(f"a number, not {str(value).lower()}")
        return value


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


def first_problem(model: type[BaseModel], data: Any) -> str | None:
    """What is wrong with ``data`` as a ``model`` (the first problem, naming its key), or None."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        return _describe(exc.errors()[0]) + more
    return None


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
        data = load_yaml(path.read_text(encoding="utf-8"))
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
            node[key] = load_yaml(raw)
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
