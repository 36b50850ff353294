"""Recipes: declarative TOML files validated into frozen, typed objects.

A recipe holds values only (never code). Its top-level ``kind`` names the schema it follows
(``gan`` for ``augment train``, ``evaluate`` for ``augment evaluate``, ...); each schema is a frozen
dataclass of frozen dataclasses, registered with :func:`register_recipe_kind`. Validation is strict:
an unknown key or a value of the wrong type is a one-line :class:`~augmentor.errors.RecipeError` naming
the dotted key and, for a near-miss, the key that was meant. ``--set section.key=value`` overrides are
parsed as TOML values and validated the same way. :func:`to_dict` gives the resolved recipe that
every artifact stores.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from augmentor.errors import AugmentorError, RecipeError, did_you_mean

T = TypeVar("T")

_KINDS: dict[str, type[Any]] = {}
# The shipped recipes: ``recipes/`` at the repository root, where people read them, reached from inside the
# package through the symlink ``augmentor/recipes_data`` so that a wheel (``pip install .``) carries them as
# package data.
RECIPE_DIR = Path(__file__).resolve().parent / "recipes_data"


def register_recipe_kind(kind: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: ``@register_recipe_kind("gan")`` makes recipes with ``kind = "gan"`` load as this class."""

    def decorate(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        _KINDS[kind] = cls
        return cls

    return decorate


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        inner = _type_name(args[0]) if len(args) == 2 and args[1] is Ellipsis else ", ".join(_type_name(a) for a in args)
        return f"list of {inner}" if len(args) == 2 and args[1] is Ellipsis else f"[{inner}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against ``annotation`` and convert it (lists to tuples, tables to dataclasses)."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a table, got {value!r}")
        return from_mapping(annotation, value, prefix=key)  # type: ignore[arg-type]
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key}: expected {_type_name(annotation)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            raise RecipeError(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{key}: expected {_type_name(annotation)}, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{key}: expected {len(args)} values ({_type_name(annotation)}), got {len(value)}")
        return tuple(_convert(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a table, got {value!r}")
        return types.MappingProxyType(
            {_convert(k, key_type, key): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
        )
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise RecipeError(f"{key}: unsupported type {annotation!r}")


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Validate a plain mapping into the frozen dataclass ``cls`` (recursively).

    Raises:
        RecipeError: unknown key (with a near-miss hint), missing required key or wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            raise RecipeError(f"unknown key {where!r}{did_you_mean(name, fields)}; valid keys{' in ' + prefix if prefix else ''}: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _convert(data[name], hints[name], where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing required key {where!r}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # __post_init__ checks of value ranges
        raise RecipeError(f"{prefix or cls.__name__}: {error}") from None


def to_dict(recipe: Any) -> dict[str, Any]:
    """The resolved recipe as plain JSON/TOML-serialisable data."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(recipe)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set train.algorithm=wgan-gp


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to raw recipe data (validated afterwards)."""
    for override in overrides:
        if "=" not in override:
            raise RecipeError(f"--set {override!r}: expected section.key=value")
        dotted, text = override.split("=", 1)
        parts = [part.strip() for part in dotted.strip().split(".")]
        if not all(parts):
            raise RecipeError(f"--set {override!r}: empty key")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {override!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(text.strip())
    return data


def resolve_path(path: str | Path) -> Path:
    """A recipe path, or the name of a shipped recipe (``frid-adar-liver`` -> ``RECIPE_DIR/frid-adar-liver.toml``)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    shipped = RECIPE_DIR / (candidate.name if candidate.suffix == ".toml" else f"{candidate.name}.toml")
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml")) if RECIPE_DIR.exists() else []
    raise AugmentorError(f"recipe {str(path)!r} not found{did_you_mean(candidate.stem, names)}; shipped recipes: {', '.join(names)}")


def load_recipe(path: str | Path, overrides: Sequence[str] = (), expect: str | None = None) -> Any:
    """Read, override and validate a recipe file.

    Args:
        path: a TOML file, or the name of a shipped recipe.
        overrides: ``section.key=value`` strings (``--set``).
        expect: the ``kind`` the caller needs (e.g. "gan"); a recipe of another kind is an error.

    Returns:
        The frozen recipe object of the registered class for its ``kind``.
    """
    file = resolve_path(path)
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{file}: not valid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{file}: cannot read ({error})") from None
    return validate_recipe(apply_overrides(data, overrides), source=str(file), expect=expect)


def recipe_kind(path: str | Path) -> str:
    """The ``kind`` a recipe file declares (read, not validated; a file without one gets the full check later)."""
    file = resolve_path(path)
    try:
        kind = tomllib.loads(file.read_text()).get("kind")
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return ""
    return kind if isinstance(kind, str) else ""


def validate_recipe(data: Mapping[str, Any], source: str = "recipe", expect: str | None = None) -> Any:
    """Validate raw recipe data (a dict as loaded from TOML) into its registered class."""
    _import_recipe_kinds()
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise RecipeError(f"{source}: missing top-level key 'kind' (one of {', '.join(sorted(_KINDS))})")
    if kind not in _KINDS:
        raise RecipeError(f"{source}: unknown kind {kind!r}{did_you_mean(kind, _KINDS)}; valid: {', '.join(sorted(_KINDS))}")
    if expect is not None and kind != expect:
        raise RecipeError(f"{source}: is a {kind!r} recipe, this command needs a {expect!r} recipe")
    try:
        return from_mapping(_KINDS[kind], data)
    except RecipeError as error:
        raise RecipeError(f"{source}: {error}") from None


def _import_recipe_kinds() -> None:
    """Import the modules that register recipe kinds (explicit list: no discovery by file name)."""
    import importlib

    for module in ("augmentor.training.recipe", "evaluation.recipe", "augmentor.translation.recipe"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise
