"""The store: database schema, dialects, migrations, the queue, result rows, kept results and
dependencies. Never imports the training code, only the records a job hands back (its RunResult)."""
