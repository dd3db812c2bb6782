"""``metav1.Status`` failures, shaped exactly like the apiserver's.

kubectl prints ``Error from server (<reason>): <message>`` and client libraries
branch on ``reason``/``code``, so both must match the real server.
"""

from __future__ import annotations

from typing import Any

from .resources import Resource

REASONS: dict[int, str] = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as a Status response."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": res.plural, **extra}
    if res.group:
        details["group"] = res.group
    return details


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', "NotFound", _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, f'{res.qualified} "{name}" already exists', "AlreadyExists",
                    _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict", _details(res, name))


def forbidden(res: Resource, name: str, verb: str, namespace: str | None, sub: str | None,
              user: str) -> ApiError:
    resource = f"{res.plural}/{sub}" if sub else res.plural
    target = f'{res.qualified} "{name}"' if name else res.qualified
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (f'{target} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{res.group}"{scope}')
    return ApiError(403, message, "Forbidden", _details(res, name))


def invalid(res: Resource, kind: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 with field causes, e.g. ``[("spec.replicas", "Invalid value: -1: ...")]``."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details = _details(res, name, causes=[
        {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes])
    details["kind"] = kind  # NewInvalid reports the Kind here, not the resource
    qualified = f"{kind}.{res.group}" if res.group else kind
    return ApiError(422, f'{qualified} "{name}" is invalid: {text}', "Invalid", details)


def generic(code: int, message: str | None = None, reason: str | None = None) -> ApiError:
    """A Status for an injected fault (message defaults to the apiserver's wording)."""
    default = {
        500: "Internal error occurred: injected fault",
        503: "the server is currently unable to handle the request",
        429: "the server has received too many requests and has asked us to try again later",
        504: "the server was unable to return a response in the time allotted, "
             "but may still be processing the request",
        401: "Unauthorized",
    }.get(code, f"injected fault ({code})")
    return ApiError(code, message or default, reason)
