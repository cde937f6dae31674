"""The models a tenant may use: every public model name of the config."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import ModelNotFound
from proxy.http.routes.context import authenticated
from proxy.wire.schema import ModelCard, ModelList

__all__ = ["list_models", "retrieve_model"]


async def list_models(request: Request) -> Response:
    """The models the tenant may use: every public model name of the config."""
    state, _ = authenticated(request)
    listing = ModelList(data=[ModelCard(id=name) for name in state.models])
    return Response(listing.model_dump_json(), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """One model the tenant may use (404 ``model_not_found`` otherwise)."""
    state, _ = authenticated(request)
    name = request.path_params["model"]
    if name not in state.models:
        raise ModelNotFound(f"the model {name!r} does not exist", param="model")
    return Response(ModelCard(id=name).model_dump_json(), media_type="application/json")
