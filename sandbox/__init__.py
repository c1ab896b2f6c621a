"""The sandbox network (TRON_NETWORK=sandbox): a simulated chain kept in the database, each process's node of it,
its routes, its built-in webhook inbox and its part of the document. Only the composition roots import it."""
