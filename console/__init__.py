"""The operator dashboard's core, without HTTP: admin accounts (Argon2 passwords, TOTP), their server-side sessions,
the login throttle, the audit rows of admin actions and the per-day totals of the chart. The pages are web/admin/."""
