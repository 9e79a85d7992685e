"""GET/DELETE /v1/models: the base models this server trains and serves and the fine-tuned ones it made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from assay.api.auth import authorize
from assay.api.deps import get_store
from assay.api.errors import APIError
from assay.api.models import ErrorResponse
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.serving import ServiceCatalog
from assay.api.store import Store

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(authorize)], responses=COMMON_ERRORS)


def get_catalog(request: Request) -> ServiceCatalog:
    catalog: ServiceCatalog = request.app.state.catalog
    return catalog


def _unknown(model_id: str, catalog: ServiceCatalog) -> APIError:
    shown = "".join(ch for ch in model_id[:120] if ch.isprintable())
    return APIError(404, f"The model '{shown}' does not exist; GET /v1/models lists {len(catalog.names())} models.",
                    param="model", code="model_not_found")


@router.get("", summary="List models")
def list_models(catalog: ServiceCatalog = Depends(get_catalog)) -> dict[str, Any]:
    """Base models first, then fine-tuned models and checkpoints, oldest first."""
    return {"object": "list", "data": [catalog.model_object(name) for name in catalog.names()]}


@router.get("/{model_id:path}", summary="Retrieve a model", responses=NOT_FOUND)
def retrieve_model(model_id: str, catalog: ServiceCatalog = Depends(get_catalog)) -> dict[str, Any]:
    found = catalog.model_object(model_id)
    if found is None:
        raise _unknown(model_id, catalog)
    return found


@router.delete("/{model_id:path}", summary="Delete a fine-tuned model", responses={
    **NOT_FOUND, 409: {"model": ErrorResponse, "description": "A queued or running job uses the model"}})
def delete_model(model_id: str, catalog: ServiceCatalog = Depends(get_catalog),
                 store: Store = Depends(get_store)) -> dict[str, Any]:
    """Deletes a fine-tuned model or checkpoint (its adapter files too). Base models cannot be deleted, and a
    model that a queued or running job uses (an evaluation, a benchmark, a training run from it) or that is a
    retrain cycle's champion is refused."""
    if model_id in catalog.base_names():
        raise APIError(400, f"'{model_id}' is a base model; only fine-tuned models can be deleted.",
                       param="model", code="base_model")
    row = store.get_model(model_id)
    if row is None:
        raise _unknown(model_id, catalog)
    from assay.api.cycle_store import CycleStore

    champions = [c["name"] for c in CycleStore(store).list_cycles() if c.get("champion") == model_id]
    if champions:
        raise APIError(409, f"The model '{model_id}' is the champion of cycle(s) {', '.join(champions)}; promote "
                            "another model or roll the cycle back first.", param="model", code="model_in_use")
    users = store.active_jobs_mentioning(model_id)
    if users:
        raise APIError(409, f"The model '{model_id}' is used by active job(s) {', '.join(users[:5])}; cancel them or "
                            "wait for them to finish.", param="model", code="model_in_use")
    if store.delete_model(model_id):
        catalog.unload(model_id)
        _remove_adapter_files(catalog, row)
    return {"id": model_id, "object": "model", "deleted": True}


def _remove_adapter_files(catalog: ServiceCatalog, row: dict[str, Any]) -> None:
    import shutil

    folder = (catalog.settings.data_dir / str(row["adapter_dir"])).resolve()
    if folder.is_relative_to(catalog.settings.models_dir.resolve()):
        shutil.rmtree(folder, ignore_errors=True)
