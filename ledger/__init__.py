"""The money core: creating, crediting, expiring and cancelling payments, the audit log and the webhook outbox, and
the payment as a webhook carries it. Sessions in, rows and its own errors out: nothing of HTTP."""
