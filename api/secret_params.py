"""Secret settings (pydantic `SecretStr`) of a job request: shown back masked, handed to the job intact.

A job's `params` are what clients see; the real values live in their own table (`job_secrets`), are put back
into the parameters only inside the worker that runs the job, and are deleted when the job ends.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

MASK = "**********"
Location = list[str | int]


def split_secrets(model: BaseModel, root: Location) -> tuple[Any, list[tuple[Location, str]]]:
    """(the model as JSON with every secret masked, [(location of a secret under `root`, its value)])."""
    found: list[tuple[Location, str]] = []

    def walk(value: Any, location: Location) -> Any:
        if isinstance(value, (SecretStr, SecretBytes)):
            secret = value.get_secret_value()
            found.append((location, secret.decode("utf-8") if isinstance(secret, bytes) else secret))
            return MASK
        if isinstance(value, dict):
            return {key: walk(item, [*location, str(key)]) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, [*location, index]) for index, item in enumerate(value)]
        return value

    shown = walk(model.model_dump(mode="python", by_alias=True), list(root))
    return to_jsonable_python(shown), found


def restore_secrets(params: dict[str, Any], secrets: list[tuple[Location, str]]) -> dict[str, Any]:
    """A copy of `params` with each secret put back at its location."""
    restored = copy.deepcopy(params)
    for location, value in secrets:
        target: Any = restored
        for part in location[:-1]:
            target = target[part]
        target[location[-1]] = value
    return restored
