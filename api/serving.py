"""The service's models: base models from the registry and the fine-tuned adapters in the store, served for
inference with `assay serve-model`'s routes (`catalog_router`).

One inference engine per base model, loaded on first use; a fine-tuned model is its base's engine with the
adapter loaded under the model's id. At most `max_loaded_adapters` adapters stay loaded: past that the least
recently used one that no request is using unloads. A model id the store does not list (deleted, or a
checkpoint pruned) is unknown here, and a model whose adapter folder is incomplete is never listed: the
fine-tuning job registers it only after its adapter is in place.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assay.api.settings import Settings
from assay.api.store import Store

if TYPE_CHECKING:
    from assay.evaluation.inference import InferenceEngine

log = logging.getLogger("assay.serving")
OWNED_BY = "assay"


def base_model_names(settings: Settings) -> list[str]:
    """The base models this server trains and serves: ASSAY_MODELS, else every ready registry model."""
    if settings.served_models:
        return list(settings.served_models)
    from assay.training.models import is_ready, list_models

    return [ref.name for ref in list_models() if is_ready(ref)]


class ServiceCatalog:
    """Base and fine-tuned models for the service's inference routes (thread-safe)."""

    def __init__(self, settings: Settings, *, max_tokens_default: int = 512,
                 engine_factory: Callable[[str], InferenceEngine] | None = None) -> None:
        self._store: Store | None = None
        self.settings = settings
        self.max_tokens_default = max_tokens_default
        self._factory = engine_factory or _load_engine
        self._lock = threading.RLock()
        self._engines: dict[str, InferenceEngine] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._adapters: OrderedDict[str, str] = OrderedDict()  # model id -> base, least recently used first
        self._in_use: dict[str, int] = {}
        self._bases: list[str] = []

    def bind(self, store: Store) -> None:
        """Attach the store (made by the app's startup, after the routes exist) and read the base models."""
        self._store = store
        self._bases = base_model_names(self.settings)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the catalog is not bound to a store yet")
        return self._store

    # -- listing -----------------------------------------------------------------------------------------
    def base_names(self) -> list[str]:
        return list(self._bases)

    def names(self) -> list[str]:
        return [*self._bases, *(row["id"] for row in self.store.list_models() if row["base"] in self._bases)]

    def model_object(self, name: str) -> dict[str, Any] | None:
        if name in self._bases:
            return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY, "root": name, "parent": None}
        row = self.store.get_model(name)
        if row is None:
            return None
        return model_object(row)

    # -- leasing -----------------------------------------------------------------------------------------
    def acquire(self, name: str) -> tuple[InferenceEngine, str | None]:
        if name in self._bases:
            engine = self._engine(name)
            with self._lock:
                self._in_use[name] = self._in_use.get(name, 0) + 1
            return engine, None
        row = self.store.get_model(name)
        if row is None or row["base"] not in self._bases:
            raise KeyError(name)
        engine = self._engine(row["base"])
        with self._lock:
            self._in_use[name] = self._in_use.get(name, 0) + 1
        try:
            self._ensure_adapter(engine, row)
        except BaseException:
            self.release(name)
            raise
        return engine, name

    def release(self, name: str) -> None:
        with self._lock:
            left = self._in_use.get(name, 0) - 1
            if left > 0:
                self._in_use[name] = left
            else:
                self._in_use.pop(name, None)

    def unload(self, name: str) -> None:
        """Drop a (deleted) model's adapter from memory, if it is loaded."""
        with self._lock:
            base = self._adapters.pop(name, None)
            engine = self._engines.get(base) if base is not None else None
        if engine is not None and name in engine.adapters:
            engine.remove_adapter(name)

    def loaded_adapters(self) -> list[str]:
        with self._lock:
            return list(self._adapters)

    def close(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()

    # -- loading -----------------------------------------------------------------------------------------
    def _engine(self, base: str) -> InferenceEngine:
        with self._lock:
            if base in self._engines:
                return self._engines[base]
            loading = self._loading.setdefault(base, threading.Lock())
        with loading:  # one load per base, other requests for it wait
            with self._lock:
                if base in self._engines:
                    return self._engines[base]
            log.info("loading base model %s for inference", base)
            engine = self._factory(base)
            with self._lock:
                self._engines[base] = engine
            return engine

    def _ensure_adapter(self, engine: InferenceEngine, row: dict[str, Any]) -> None:
        name = str(row["id"])
        with self._lock:
            if name in self._adapters:
                self._adapters.move_to_end(name)
                return
        folder = self.settings.data_dir / str(row["adapter_dir"])
        with self._lock:
            if name not in engine.adapters:
                engine.add_adapter(name, folder)
            self._adapters[name] = str(row["base"])
            self._adapters.move_to_end(name)
            self._evict()

    def _evict(self) -> None:
        """Unload least recently used adapters past the bound; one in use by a request stays."""
        excess = len(self._adapters) - self.settings.max_loaded_adapters
        for name in list(self._adapters):
            if excess <= 0:
                break
            if self._in_use.get(name):
                continue
            base = self._adapters.pop(name)
            engine = self._engines.get(base)
            if engine is not None and name in engine.adapters:
                engine.remove_adapter(name)
                log.info("unloaded adapter %s (least recently used)", name)
            excess -= 1


def model_object(row: dict[str, Any]) -> dict[str, Any]:
    """A stored model as OpenAI's Model object, with its base and (for checkpoints) step."""
    shown: dict[str, Any] = {"id": row["id"], "object": "model", "created": int(row["created_at"]),
                             "owned_by": OWNED_BY, "root": row["base"], "parent": row["base"]}
    if row.get("job_id"):
        shown["fine_tuning_job_id"] = row["job_id"]
    if row.get("step") is not None:
        shown["step"] = row["step"]
    return shown


def _load_engine(base: str) -> InferenceEngine:
    from assay.evaluation.inference import InferenceEngine
    from assay.training.models import local_model_path

    return InferenceEngine.load(local_model_path(base))
