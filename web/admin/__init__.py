"""The operator's dashboard at /admin (contract §11): server-rendered pages over console/ (accounts, sessions) and the
ledger. web/admin/site.py builds its blueprint."""
