"""Backend errors as HTTP answers: the one place that maps one to the other."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, status

from carina.platform.api.manifests import FieldError
from carina.platform.controlplane.backend_errors import (
    AlreadyExists,
    BackendError,
    Invalid,
    NotFound,
    StorageFull,
    Unavailable,
)
from carina.platform.controlplane.schemas import ErrorResponse
from carina.workloads.config import describe_errors

_STATUS: dict[type[BackendError], tuple[int, str]] = {
    NotFound: (status.HTTP_404_NOT_FOUND, "NotFound"),
    AlreadyExists: (status.HTTP_409_CONFLICT, "AlreadyExists"),
    Invalid: (status.HTTP_422_UNPROCESSABLE_CONTENT, "Invalid"),
    Unavailable: (status.HTTP_503_SERVICE_UNAVAILABLE, "Unavailable"),
    StorageFull: (status.HTTP_503_SERVICE_UNAVAILABLE, "StorageFull"),
}

# Declared on every route of the API so the OpenAPI document names each error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in (
        (400, "the body is not JSON"),
        (401, "no valid bearer token"),
        (403, "the token may not use this namespace"),
        (404, "no such job"),
        (409, "a job of that name exists"),
        (413, "request body too large"),
        (422, "the request breaks a rule: field paths and rules"),
        (503, "a dependency of the backend did not answer, or its storage is full"),
    )
}


@contextmanager
def http_errors() -> Iterator[None]:
    """Turn a BackendError raised inside the block into its HTTPException."""
    try:
        yield
    except BackendError as exc:
        code, reason = _STATUS.get(type(exc), (status.HTTP_500_INTERNAL_SERVER_ERROR, "Error"))
        errors = [{"path": p, "rule": r} for p, r in getattr(exc, "errors", [])]
        raise HTTPException(
            code, {"reason": reason, "message": str(exc), "errors": errors}
        ) from None


def field_errors(errors: Sequence[Any]) -> list[FieldError]:
    """FastAPI's validation errors as manifest paths: the body's fields need no `body.`."""
    out = []
    for item in errors:
        loc = tuple(item.get("loc", ()))
        if loc[:1] == ("body",):
            loc = loc[1:]
        [(path, rule)] = describe_errors([{**item, "loc": loc}])
        out.append(FieldError(path, rule))
    return out
