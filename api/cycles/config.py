"""Loading a cycle definition with errors that name the field: for the command line and the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from assay.schemas.cycle import CycleConfig, CycleError


def describe_validation(exc: ValidationError, where: str = "") -> str:
    """Every error as `field.path: message` (unknown keys as such), joined on one line."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required")
        else:
            lines.append(f"{loc}: {err['msg']}".replace("Value error, ", "") if loc else err["msg"])
    return f"invalid cycle{' ' + where if where else ''}: " + "; ".join(lines)


def parse_config(data: Any, folder: Path | None = None, where: str = "") -> CycleConfig:
    if not isinstance(data, dict):
        raise CycleError(f"invalid cycle{' ' + where if where else ''}: a cycle must be a mapping, "
                         f"got {type(data).__name__}")
    try:
        config = CycleConfig.model_validate(data)
    except ValidationError as exc:
        raise CycleError(describe_validation(exc, where)) from exc
    return config.resolved(folder) if folder is not None else config


def load_config(path: Path) -> CycleConfig:
    """A cycle YAML file, validated; relative paths in it resolve against its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CycleError(f"cannot read cycle file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CycleError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return parse_config(data, path.resolve().parent, str(path))
