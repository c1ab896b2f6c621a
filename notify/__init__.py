"""Operator notifications through Apprise (NOTIFY_URLS): the outbox written with the events they report, the
messages, the child process one attempt runs in, and the dispatcher that delivers them."""
