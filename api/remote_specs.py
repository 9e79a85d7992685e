"""What a remote client may put in a spec: settings typed `ServerPath` never, `ServerModel` only as the name
of a model installed on this server.

The checks find those settings by their type (assay.schemas.server), so a new path or model setting is covered
the day it is added. They never touch the file system with a client's value: an existing and a missing path
get the same answer, so the API cannot be used to probe the server's files.
"""

from __future__ import annotations

import importlib.metadata
import threading
import time
from collections.abc import Callable, Iterable

from pydantic import BaseModel

from assay.api.errors import APIError
from assay.schemas.server import MarkedValue, ServerResource, marked_values

CATALOG_TTL_S = 30.0
SHOWN_NAMES = 12


def spacy_packages() -> Iterable[str]:
    """Installed spaCy pipeline packages (they register the `spacy_models` entry point; spaCy not imported)."""
    return [entry.name for entry in importlib.metadata.entry_points(group="spacy_models")]


def hub_cache_models() -> Iterable[str]:
    """Model repositories in this server's Hugging Face cache (HF_HUB_CACHE), which load offline by name."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:
        return []
    try:
        return [repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model"]
    except CacheNotFound:
        return []


MODEL_SOURCES: list[Callable[[], Iterable[str]]] = [spacy_packages, hub_cache_models]
"""Where installed model names come from; a model registry adds its own source here."""

_cache: tuple[float, frozenset[str]] = (-1e18, frozenset())
_cache_lock = threading.Lock()


def installed_models() -> frozenset[str]:
    """Names of the models installed on this server, re-read at most every 30 s."""
    global _cache
    with _cache_lock:
        stamp, names = _cache
        if time.monotonic() - stamp > CATALOG_TTL_S:
            names = frozenset(name for source in MODEL_SOURCES for name in source())
            _cache = (time.monotonic(), names)
        return names


def _shown(value: object) -> str:
    return "".join(ch for ch in str(value)[:200] if ch.isprintable())


def _refusal(setting: MarkedValue, root: str, installed: Callable[[], frozenset[str]]) -> APIError | None:
    param = f"{root}.{setting.dotted}"
    if setting.resource is ServerResource.PATH:
        if setting.value in (None, "", [], ()):
            return None
        return APIError(400, f"{param} names a path on the server and is not accepted over the API; run such a "
                             "job with the `assay` command on the server instead.",
                        param=param, code="server_path_not_allowed")
    values = setting.value if isinstance(setting.value, (list, tuple)) else [setting.value]
    for value in values:
        if value is None or value == setting.default or (isinstance(setting.default, list)
                                                         and value in setting.default):
            continue  # the server's own default: whether it is installed is the job's business
        names = installed()
        if value in names:
            continue
        listing = ", ".join(sorted(names)[:SHOWN_NAMES]) or "none"
        more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
        return APIError(400, f"{param}: '{_shown(value)}' is not the name of a model installed on this server. "
                             f"Over the API a model setting takes only an installed model's name, never a path "
                             f"(installed: {listing}{more}).", param=param, code="model_not_installed")
    return None


def check_remote_spec(spec: BaseModel, root: str,
                      installed: Callable[[], frozenset[str]] = installed_models) -> None:
    """Raise a 400 APIError for the first setting a remote client may not use; `root` prefixes `param`."""
    for setting in marked_values(spec):
        refusal = _refusal(setting, root, installed)
        if refusal is not None:
            raise refusal
