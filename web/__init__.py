"""HTTP: the merchant's and operator's API, the payer's checkout page, /metrics and /openapi.json, and the Services
one process's routes share. Turns requests into calls of the core and its answers (and refusals) into JSON."""
