"""/openapi.json, generated from the same pydantic models the routes validate requests with and build
responses from: requests in validation mode, responses in serialization mode."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    ModelList,
    PanelConfig,
    ProgressEvent,
)

__all__ = ["openapi_document", "OpenAPIDocument"]

_REF = "#/components/schemas/{model}"


class OpenAPIDocument(BaseModel):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    str(code): _json(ErrorResponse, text)
    for code, text in (
        (
            400,
            "malformed JSON, wrong types, invalid values, too many pool members, a model id the server's policy "
            "does not allow (model_not_allowed), recursion guard",
        ),
        (401, "missing or wrong server key"),
        (402, "the estimated cost exceeds fusion.max_cost"),
        (404, "unknown model"),
        (408, "the request body did not arrive within [server] body_timeout"),
        (413, "request body over the configured limit"),
        (415, "a body that is not Content-Type: application/json"),
        (429, "rate limited upstream"),
        (502, "every upstream / pool member failed, or sent a malformed response"),
        (503, "too many open connections"),
        (504, "no answer within [server] passthrough_timeout"),
    )
}


def _paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    stream = (
        "text/event-stream when stream=true: `data:` events are ChatCompletionChunk objects (the last carries "
        "usage and fusion; one with finish_reason 'error' and an error object ends a failed stream), then "
        "`data: [DONE]`. Panel progress goes out as SSE comment lines `: polyfuse {ProgressEvent}`."
    )
    return {
        "/v1/chat/completions": {
            "post": {
                "summary": "Chat completion: fusion for polyfuse/<preset>, pass-through for a single model id",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(ChatCompletionRequest)}},
                },
                "responses": {
                    "200": {
                        "description": "chat.completion (or an SSE stream of chunks)",
                        "content": {
                            "application/json": {"schema": _ref(ChatCompletion)},
                            "text/event-stream": {"schema": _ref(ChatCompletionChunk), "description": stream},
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "Presets (polyfuse/<name>) and configured single models",
                "security": secured,
                "responses": {"200": _json(ModelList, "model list"), "401": _ERRORS["401"]},
            }
        },
        "/v1/fusion/config": {
            "get": {
                "summary": "What the web panel's pickers offer",
                "security": secured,
                "responses": {"200": _json(PanelConfig, "presets, models, modes"), "401": _ERRORS["401"]},
            }
        },
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json(Health, "ok")}}},
    }


def openapi_document() -> OpenAPIDocument:
    _, defs = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (ChatCompletion, "serialization"),
            (ChatCompletionChunk, "serialization"),
            (ErrorResponse, "serialization"),
            (ModelList, "serialization"),
            (PanelConfig, "serialization"),
            (Health, "serialization"),
            (ProgressEvent, "serialization"),
        ],
        ref_template=_REF,
    )
    return OpenAPIDocument(
        openapi="3.1.0",
        info={"title": "polyfuse", "version": __version__, "description": "OpenAI-compatible fusion server"},
        paths=_paths(),
        components={
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    )
