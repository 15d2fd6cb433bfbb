"""Errors the harness reports to a user as one line, without a traceback."""


class HarnessError(Exception):
    """Bad input or an unusable environment: the CLI prints the message and exits 2.

    Raise it before anything is written, so that the database is unchanged.
    """


class PermanentJobError(Exception):
    """A job failure that retrying cannot fix (a NaN loss, a bad spec): no further attempts."""


class JobInterrupted(Exception):
    """The worker was asked to stop (SIGINT/SIGTERM) or lost its lease while a job ran."""


class ModelError(HarnessError, PermanentJobError):
    """A model that cannot serve the job (cannot be loaded, or its checkpoint lacks the encoder
    its configuration describes): the same model fails the same way on every attempt."""


class DataError(HarnessError, PermanentJobError):
    """A data file the job cannot use (a malformed line, a missing or impossible label, a missing
    text): named by file and line. The data will not change between attempts."""


class DatabaseUnavailable(HarnessError):
    """The database server cannot be reached now. Transient: wait and try again."""


class DatabaseFileError(HarnessError):
    """The SQLite file changed under the process (deleted, replaced, truncated, corrupt, made
    read-only): a worker stops at once, keeping any result it holds in its run folder."""
