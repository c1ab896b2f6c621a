"""What the payment rules refuse. The money core raises these and knows nothing of HTTP; the API answers each as a
409 in its JSON error form (app.py's error handlers, the one place that maps them)."""
from __future__ import annotations


class Refused(Exception):
    """A request that conflicts with what is stored: another open payment's amount, an order_id taken with other
    details, a payment no longer cancellable. `code` for programs, `message` (one sentence a person can act on) for
    people, `field` when one input is at fault."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field
