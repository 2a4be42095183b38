"""API docs that work offline: Swagger UI at /docs and ReDoc at /redoc, their scripts and styles
served by this coordinator from the `fastapi-offline` package (FastAPI's defaults load them from a
CDN, which leaves a blank page on a machine without internet). No request leaves the machine."""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/static/docs"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))  # swagger-ui-bundle.js, .css, redoc.standalone.js
# ReDoc's bundle fetches its "API docs by Redocly" badge from a CDN (Redocly/redoc#2108); we serve the
# bundle with that one address pointed at a local image instead.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_SCRIPT = "/static/redoc/redoc.standalone.js"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="fedmarket coordinator: API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # the badge would ask validator.swagger.io
    )


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="fedmarket coordinator: API",
        redoc_js_url=REDOC_SCRIPT,
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


@router.get(REDOC_SCRIPT)
def redoc_script() -> Response:
    return Response(_local_redoc_bundle(), media_type="text/javascript")


@functools.cache
def _local_redoc_bundle() -> bytes:
    bundle = (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_CDN_LOGO, f"{ASSETS_PATH}/favicon.png".encode())


def install_offline_docs(app: FastAPI) -> None:
    """Call on an app created with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    app.include_router(router)
