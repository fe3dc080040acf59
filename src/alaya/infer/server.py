"""``alaya serve``: the published api.py's ``POST /qa`` and an OpenAI-compatible API, on FastAPI + uvicorn.

Endpoints: ``POST /qa``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (both streamed as
server-sent events when ``stream`` is true), ``GET /v1/models``, ``GET /health``. Requests go through the
:class:`~alaya.infer.scheduler.BatchScheduler`: batched with other waiting requests, refused with 429 when the
queue is full, stopped when the client disconnects. With an API key every endpoint but /, /health and the docs needs
``Authorization: Bearer KEY``. Errors use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import hmac
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from alaya.infer.api_schemas import (ERROR_RESPONSES, APIError, ChatRequest, CompletionRequest, QARequest, QAResponse,
                                     error_body)
from alaya.infer.scheduler import BatchScheduler
from alaya.infer.serving import Serving

CHAT_PAGE = (resources.files("alaya.infer") / "web" / "chat.html").read_text(encoding="utf-8")
# no API key needed: the chat page (it asks for the key itself), the health check and the schema
OPEN_PATHS = ("/", "/health", "/openapi.json")


def _error(status: int, message: str, type_: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param), status_code=status, headers=headers)


def create_app(engine: BatchScheduler, model_name: str, api_key: str | None = None, default_max_tokens: int = 1024) -> FastAPI:
    """The FastAPI app: error handlers, the API-key check, and thin routes over one :class:`Serving`."""
    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, so an offline server would show a blank
    # page; the schema itself is at /openapi.json (any OpenAPI viewer or client generator reads it)
    app = FastAPI(title="Alaya", version="1", description="The Alaya model: the published /qa API and an OpenAI-compatible API.",
                  docs_url=None, redoc_url=None)
    serving = Serving(engine, model_name, default_max_tokens)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return _error(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{loc or 'body'}: {first.get('msg', 'invalid request')}", "invalid_request_error", loc or None)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error")
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        """The chat page (one static file shipped with the package; it calls /v1/chat/completions)."""
        return HTMLResponse(CHAT_PAGE, headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict:
        return serving.health()

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models() -> dict:
        return serving.models()

    @app.post("/qa", response_model=QAResponse, responses=ERROR_RESPONSES)
    async def qa(req: QARequest, request: Request):
        """The published api.py: instruction + history (user, assistant, ...) → output, org_output."""
        return await serving.qa(req, request)

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(req: ChatRequest, request: Request):
        return await serving.chat(req, request)

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(req: CompletionRequest, request: Request):
        return await serving.completions(req, request)

    return app


def serve(model_path: str, adapter: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, device: str | None = None, dtype: str = "auto", compile: bool = False,
          quantize: str = "none", decode_path: str = "auto", attention: str = "auto", max_batch: int = 8, max_queue: int = 64, model_name: str | None = None, log_level: str = "info") -> None:
    import os

    import uvicorn

    from alaya.infer.generate import warm_up
    from alaya.infer.loading import load_for_inference

    backend, tok = load_for_inference(model_path, adapter, device=device, dtype=dtype, compile=compile,
                                      quantize=quantize, decode_path=decode_path, attention=attention)
    name = model_name or os.path.basename(os.path.normpath(model_path))
    warm_up(backend, max_batch, say=lambda line: print(line, flush=True))
    engine = BatchScheduler(backend, tok, max_batch=max_batch, max_queue=max_queue)
    app = create_app(engine, name, api_key=api_key)
    print(f"serving {name} on http://{host}:{port}  (OpenAI base_url http://{host}:{port}/v1; the chat page at /, the schema at /openapi.json)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        engine.close()
