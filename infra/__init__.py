"""What every layer stands on: configuration, time, money amounts, TRON addresses, the logging setup, stop signals
and the embedded PostgreSQL, socket deadlines, outbound HTTP, the callback address guard, and what a process counts
for Prometheus. Imports nothing else of the project."""
