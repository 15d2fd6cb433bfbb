"""Errors the harness reports to a user as one line, without a traceback."""


class HarnessError(Exception):
    """Bad input or an unusable environment: the CLI prints the message and exits 2.

    Raise it before anything is written, so that the database is unchanged.
    """


class PermanentJobError(Exception):
    """A job failure that retrying cannot fix (a NaN loss, a bad spec): no further attempts."""


class JobInterrupted(Exception):
    """The worker was asked to stop (SIGINT/SIGTERM) or lost its lease while a job ran."""
