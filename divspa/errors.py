"""Every error divspa raises on purpose, in one hierarchy, with the command's exit code.

A scheduler sees exit codes, a person sees one line: each message names what failed (the key,
the table, the location, the stage) and the CLI prints it without a traceback (`--set
run.log_level=DEBUG` puts the traceback in the run's log). Each class keeps the builtin base it
always had (ValueError or RuntimeError), so callers catching those still do.

Exit codes of every `divspa` command:
    0  success (also: a stage skipped because this run already committed it)
    1  the work failed: bad input data, an unreachable store, a failed write, a stage's error,
       a refused SQL statement; tables are at their previous versions
    2  the command line or the configuration is wrong; nothing ran
    3  the run completed but a quality gate failed: it is recorded, inspectable, and NOT
       published (trainers reading the latest published run do not see it)
    4  another process holds this run id (a retry overlapping a late run): nothing ran; the
       message names the holder
"""

from __future__ import annotations


class DivspaError(Exception):
    """Base of divspa's errors."""

    exit_code = 1


class ConfigError(DivspaError, ValueError):
    """A configuration file or override is invalid; the message names the key and the source."""

    exit_code = 2


class StorageError(DivspaError, RuntimeError):
    """A location cannot be reached (wrong credentials, missing bucket...); the message names it."""


class SchemaError(DivspaError, ValueError):
    """A DataFrame does not match its table's schema; the message names the column."""


class DeltaWriteError(DivspaError, RuntimeError):
    """A write failed; the table is still at its previous version."""


class ReadOnlyError(DivspaError, ValueError):
    """A statement given to `divspa sql` would change a table or the catalog; nothing ran."""


class SourceError(DivspaError, ValueError):
    """The configured source cannot be read as configured."""


class TooManyBadRows(DivspaError, ValueError):
    """The share of quarantined rows exceeds ingest.max_bad_fraction; nothing was written."""


class SplitError(DivspaError, ValueError):
    """The split would leave train or test empty."""


class TrainingError(DivspaError, RuntimeError):
    """Distributed training failed; the ranks' own output is in the log above the message."""


class StageError(DivspaError, RuntimeError):
    """A pipeline stage failed; the message names the stage and the cause."""


class NotPublished(DivspaError, RuntimeError):
    """The run finished, but a quality gate failed (the message says which): not published."""

    exit_code = 3


class RunInProgress(DivspaError, RuntimeError):
    """Another process is running the same run id on this output directory; nothing was done."""

    exit_code = 4


class NoPublishedRun(DivspaError, LookupError):
    """The latest published run was asked for, but no run of the warehouse has been published."""
