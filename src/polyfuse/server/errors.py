"""HTTP errors in OpenAI's form, and the translation of polyfuse's typed errors into them.

A client's mistake is always a 4xx with ``{"error": {"message", "type", "code"}}``; the status for a library
error is looked up along its class's MRO in a table (no if/elif on types). Messages pass through a redactor
so that a provider key an upstream echoed back can never reach a client or the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import errors as pe
from ..gateway import errors as ge
from ..redaction import Redactor
from .schemas import ErrorDetail, ErrorResponse

__all__ = ["ApiError", "from_library", "from_validation", "Redactor"]


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    metadata: dict[str, Any] | None = None
    retry_after: float | None = None  # seconds, sent as a Retry-After header (429, 503)

    def detail(self) -> ErrorDetail:
        return ErrorDetail(
            message=self.message, type=self.type, code=self.code, param=self.param, metadata=self.metadata
        )

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=self.detail())


# status, OpenAI error type, code; the most specific class on the MRO wins.
_STATUS: dict[type[BaseException], tuple[int, str, str]] = {
    ge.Unauthenticated: (401, "authentication_error", "invalid_api_key"),
    ge.NotAllowed: (403, "permission_error", "model_not_allowed_for_key"),
    ge.LimitExceeded: (429, "rate_limit_error", "rate_limit_exceeded"),
    ge.BudgetExhausted: (402, "insufficient_quota", "budget_exhausted"),
    ge.PriceUnknown: (400, "invalid_request_error", "price_unknown"),
    ge.GatewayUnavailable: (503, "service_unavailable", "limits_unavailable"),
    pe.UnknownModelError: (404, "invalid_request_error", "model_not_found"),
    pe.ModelNotAllowedError: (400, "invalid_request_error", "model_not_allowed"),
    pe.TooManyMembersError: (400, "invalid_request_error", "too_many_members"),
    pe.MissingKeyError: (400, "invalid_request_error", "provider_not_configured"),
    pe.ConfigError: (400, "invalid_request_error", "invalid_value"),
    pe.InvalidRequestError: (400, "invalid_request_error", "invalid_request"),
    pe.BudgetExceededError: (402, "insufficient_quota", "budget_exceeded"),
    pe.UserError: (400, "invalid_request_error", "invalid_request"),
    pe.AuthenticationError: (502, "upstream_error", "upstream_authentication"),
    pe.RateLimitedError: (429, "rate_limit_error", "upstream_rate_limited"),
    pe.ProviderTimeoutError: (504, "upstream_error", "upstream_timeout"),
    pe.BadUpstreamRequestError: (400, "invalid_request_error", "upstream_rejected_request"),
    pe.ModelNotAvailableError: (503, "upstream_error", "model_not_available"),
    pe.MalformedResponseError: (502, "upstream_error", "upstream_malformed_response"),
    pe.UpstreamError: (502, "upstream_error", "upstream_error"),
    pe.ProviderError: (502, "upstream_error", "upstream_error"),
    pe.AllMembersFailedError: (502, "upstream_error", "all_members_failed"),
    pe.FusionError: (502, "upstream_error", "fusion_failed"),
}


def from_library(exc: pe.PolyfuseError, redact: Redactor) -> ApiError:
    status, kind, code = next(_STATUS[c] for c in type(exc).__mro__ if c in _STATUS)
    metadata: dict[str, Any] | None = None
    retry_after: float | None = None
    if isinstance(exc, pe.BudgetExceededError):
        metadata = {"estimate": exc.estimate, "max_cost": exc.max_cost}
    elif isinstance(exc, pe.AllMembersFailedError):
        metadata = {"reasons": {m: redact(r) for m, r in exc.reasons.items()}}
    elif isinstance(exc, ge.BudgetExhausted):
        metadata = exc.metadata
    elif isinstance(exc, ge.LimitExceeded | ge.GatewayUnavailable):
        retry_after = exc.retry_after
    return ApiError(status, redact(str(exc)), kind, code, metadata=metadata, retry_after=retry_after)


def from_validation(exc: ValidationError) -> ApiError:
    """The first problem of a request body, with the field path as ``param``."""
    err = exc.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {err['msg']}", code="invalid_json")
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "model_type" and not where:
        return ApiError(400, "the request body must be a JSON object", code="invalid_type")
    code = "missing_required_parameter" if err["type"] == "missing" else "invalid_value"
    if err["type"].endswith(("_type", "_parsing")):  # e.g. string_type, float_parsing
        code = "invalid_type"
    message = f"{where}: {err['msg']}" if where else str(err["msg"])
    return ApiError(400, message, code=code, param=where or None)
