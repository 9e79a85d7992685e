"""The models an evaluation scores: the base (a registered name or a local folder) and its LoRA adapters."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from assay.evaluation.errors import EvalInputError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class ModelTarget:
    """One model to score: the base alone (adapter None) or the base with one adapter."""

    label: str
    model_path: Path
    adapter: Path | None = None
    adapter_sha256: str | None = None


def assay_home() -> Path:
    return Path(os.environ.get("ASSAY_HOME") or Path.home() / ".cache" / "assay").expanduser()


def resolve_model(name: str) -> Path:
    """A local Hugging Face folder, or a name of the model registry (when the training package provides one)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EvalInputError(f"model {name}: the folder has no config.json (not a Hugging Face model folder)")
        return path.resolve()
    registered = _registry_path(name)
    if registered is not None:
        return registered
    cached = assay_home() / "models" / name  # where the model registry converts named models
    if "/" not in name and (cached / "config.json").is_file():
        return cached.resolve()
    raise EvalInputError(f"model '{name}': no such folder" + _known_models_hint())


def _registry_path(name: str) -> Path | None:
    # The registry belongs to training (issue 13): a name means the same weights in training and evaluation.
    if importlib.util.find_spec("assay.training.models") is None:
        return None
    registry = importlib.import_module("assay.training.models")
    local_model_path = getattr(registry, "local_model_path", None)
    if local_model_path is None:
        return None
    try:
        found = Path(local_model_path(name))
    except ValueError as exc:  # the registry's ModelError: one line that lists the known names
        raise EvalInputError(str(exc)) from exc
    return found  # a local folder, or a hub id (online) that lm-eval's HFLM downloads


def _known_models_hint() -> str:
    return " (give a registered model name or a local Hugging Face model folder, e.g. `assay make-tiny-model DIR`)"


def adapter_folder(path: Path) -> Path:
    """The adapter folder itself, or the `adapter/` folder of a fine-tuning run."""
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    if not path.exists():
        raise EvalInputError(f"adapter {path}: no such folder")
    raise EvalInputError(f"adapter {path}: no adapter_config.json here or in {path / 'adapter'} "
                         "(expected a PEFT adapter folder or a fine-tuning output folder)")


def adapter_sha256(folder: Path) -> str:
    """Hash of the adapter's config and weights: which adapter was scored, recorded in the report."""
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def adapter_targets(model_path: Path, adapters: list[str]) -> list[ModelTarget]:
    """`[LABEL=]PATH` entries -> targets with unique labels (the folder's name by default; never `base`)."""
    targets: list[ModelTarget] = []
    for entry in adapters:
        label, sep, raw = entry.partition("=")
        if not sep or "/" in label or not label:
            label, raw = "", entry
        given = Path(raw).expanduser()
        folder = adapter_folder(given)
        if not label:
            label = (given.name if folder != given else folder.name) or "adapter"
        if label == "base" or any(t.label == label for t in targets):
            label = f"{label}-{len(targets) + 1}"
        targets.append(ModelTarget(label, model_path, folder.resolve(), adapter_sha256(folder)))
    return targets


def model_fingerprint(model_path: Path) -> dict[str, object]:
    """What identifies the base model's weights cheaply: file names, sizes and modification times."""
    if not model_path.is_dir():  # a hub id: its name is all there is to go by
        return {"path": str(model_path)}
    files = sorted(p for p in model_path.iterdir() if p.is_file())
    return {"path": str(model_path), "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def cache_key(target: ModelTarget, device: str, dtype: str) -> str:
    """The request cache is keyed by request only (lm-eval), so each model gets its own cache file."""
    import lm_eval

    identity = {"model": model_fingerprint(target.model_path), "adapter": target.adapter_sha256, "device": device,
                "dtype": dtype, "lm_eval": lm_eval.__version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"
