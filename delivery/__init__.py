"""Webhook delivery: the outbox claimed with leases, each attempt signed (Standard Webhooks), sent within its
deadline to a public address only, recorded and retried on the schedule."""
