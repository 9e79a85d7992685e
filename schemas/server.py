"""Type markers for settings that name something on the machine running the code (a path, a model).

A field typed `ServerPath` or `ServerModel` (or a list / optional of them) says so in the model itself,
so whoever accepts specs from a less trusted party (the REST API) can find every such setting by walking
the model, instead of keeping a hand-written list that new settings silently miss.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel


class ServerResource(enum.Enum):
    """What a marked setting names on the machine that runs the pipeline."""

    PATH = "path"
    """A file or folder: fine on the command line, never acceptable from a remote client."""
    MODEL = "model"
    """A model (package name, hub id, or a local folder): remote clients may only name installed models."""


ServerPath = Annotated[str, ServerResource.PATH]
ServerModel = Annotated[str, ServerResource.MODEL]


@dataclass(frozen=True)
class MarkedSetting:
    """One marked setting of a model class: its dotted location (aliases used) and what it names."""

    location: str
    resource: ServerResource


@dataclass(frozen=True)
class MarkedValue:
    """A marked setting's value in one model instance, and the field's default."""

    location: tuple[str | int, ...]
    resource: ServerResource
    value: Any
    default: Any

    @property
    def dotted(self) -> str:
        return ".".join(str(part) for part in self.location)


def _markers(annotation: Any) -> set[ServerResource]:
    """Markers anywhere inside a type (Annotated metadata, list items, Optional members), not inside models."""
    found: set[ServerResource] = set()
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        found.update(m for m in metadata if isinstance(m, ServerResource))
        return found | _markers(base)
    for argument in typing.get_args(annotation):
        found |= _markers(argument)
    return found


def _field_markers(field: Any) -> set[ServerResource]:
    found = {m for m in field.metadata if isinstance(m, ServerResource)}
    return found | _markers(field.annotation)


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is Annotated or origin in (list, tuple, set, frozenset, dict, Union, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _nested_models(argument)


def marked_settings(model: type[BaseModel], prefix: str = "") -> list[MarkedSetting]:
    """Every marked setting of a model class, nested models included (list items shown as `[]`)."""
    found: list[MarkedSetting] = []
    for name, field in model.model_fields.items():
        location = f"{prefix}{field.alias or name}"
        for resource in sorted(_field_markers(field), key=lambda r: r.value):
            found.append(MarkedSetting(location, resource))
        for nested in _nested_models(field.annotation):
            is_list = typing.get_origin(field.annotation) is list
            found.extend(marked_settings(nested, f"{location}{'[]' if is_list else ''}."))
    return found


def marked_values(instance: BaseModel, prefix: tuple[str | int, ...] = ()) -> Iterator[MarkedValue]:
    """Every marked setting's value in a model instance, walking nested models, lists and dicts of them."""
    for name, field in type(instance).model_fields.items():
        location = (*prefix, field.alias or name)
        value = getattr(instance, name)
        for resource in _field_markers(field):
            default = field.get_default(call_default_factory=True)
            yield MarkedValue(location, resource, value, default)
        yield from _walk_nested(value, location)


def _walk_nested(value: Any, location: tuple[str | int, ...]) -> Iterator[MarkedValue]:
    if isinstance(value, BaseModel):
        yield from marked_values(value, location)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk_nested(item, (*location, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_nested(item, (*location, str(key)))
