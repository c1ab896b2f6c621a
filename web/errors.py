"""The one error a request is refused with: every refusal, whether by validation or by the payment rules, raises
`ApiError`, and one handler (app.py) turns it into `{"error", "message", "field"?}` with its status. Nothing is
stored when a request is refused: the caller's transaction rolls back as the error passes through it."""
from __future__ import annotations

from typing import Any

# The JSON form of every error answer, as /openapi.json states it.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body = {"error": code, "message": message}
    if field:
        body["field"] = field
    return body


class ApiError(Exception):
    """A refused request: `code` for programs, `message` (one sentence a person can act on) for people, `field`
    when one input is at fault."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status
