"""Reading the chain: what the watcher believes about it, the two ways of reading it, the second look, one upstream
and what its answers say, and the payer's "I already paid". The client itself is tron_client.py."""
