"""API errors and the metav1.Status objects they become on the wire.

kube-apiserver answers every failure with a Status object whose `reason` and
`code` clients branch on (kubectl's "AlreadyExists", client-go's
IsConflict/IsGone), so kubesim raises one exception type that carries both
and renders exactly that shape.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure that the API server reports to its client as a Status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group: str, kind_plural: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind_plural}
    if group:
        details["group"] = group
    if name:
        details["name"] = name
    return details


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(group, plural)} "{name}" not found',
        details=_details(group, plural, name),
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(group, plural)} "{name}" already exists',
        details=_details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
        details=_details(group, plural, name),
    )


def invalid(
    group: str, kind: str, name: str, causes: list[tuple[str, str, str]]
) -> ApiError:
    """422 Invalid; each cause is (reason, field, message), reason e.g. FieldValueRequired."""
    # kube-apiserver's NewInvalid: the kind qualified by its group, brackets only around
    # several causes
    parts = [f"{field}: {message}" for _, field, message in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = _details(group, kind, name)
    details["causes"] = [
        {"reason": reason, "message": message, "field": field}
        for reason, field, message in causes
    ]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)


def forbidden(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{_qualified(group, plural)} "{name}" is forbidden: {why}',
        details=_details(group, plural, name),
    )
