"""The coordinator's FastAPI app: task API, content store API, the dashboard, and the background workers.

Run it with the console script:

    fedmarket-coordinator            # devnet defaults: Anvil on :8545, deployments/local.json
    FEDMARKET_PROFILE=production FEDMARKET_COORDINATOR_KEY=0x... fedmarket-coordinator
"""

from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI

from backend.dashboard.pages import install_dashboard
from backend.errors import install_error_handlers
from backend.routers import ROUTERS
from backend.routers.docs import install_offline_docs
from backend.services import Services, Supervisor
from backend.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        services = Services.build(settings)
        services.indexer.sync()  # catch up from the last indexed block before serving
        if settings.run_orchestrators:
            services.supervisor = Supervisor(services)
            services.supervisor.start()
        app.state.services = services
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="fedmarket coordinator",
        version="0.1.0",
        description=(
            "Posts federated-learning tasks on-chain, serves content-addressed blobs, starts rounds, "
            "has the contract settle them from the validators' scores, and publishes each round's model."
        ),
        lifespan=lifespan,
        docs_url=None,  # served with local assets by install_offline_docs
        redoc_url=None,
    )
    install_error_handlers(app)
    install_offline_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    install_dashboard(app)  # the web pages at /, after the API so no page shadows a route
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the `HTTPValidationError` 422 it adds to every route that takes
    parameters: our handler never sends that body. A route whose request can fail validation
    declares its own 422 (an ErrorBody, `backend.errors.error_responses`); the rest never answer 422
    (a blob's CID is any string, refused as a 400 InvalidCID)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)  # caches it in app.openapi_schema, which is edited in place
    for operations in schema["paths"].values():
        for operation in operations.values():
            default = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(default.get("content")):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def main() -> None:
    """Console script `fedmarket-coordinator`."""
    import uvicorn

    from backend.server import uvicorn_config

    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(create_app(settings), settings, log_level="info")).run()


if __name__ == "__main__":
    main()
