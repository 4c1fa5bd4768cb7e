"""The run log: every fusion run (CLI, server, code tasks) recorded in SQLite, or in PostgreSQL for a team.

from polyfuse.store import open_log
with open_log(config.log) as log:
    run_id = log.record(request, result, source="cli")       # or await log.arecord(...) from async code
    log.record_error(request, exc, source="cli")             # a run that produced no answer
    recent = log.runs(LogFilter(model="gpt-4o", since="7d"))

A server queues records for a background writer instead (``LogWriter``: bounded, batched, never blocking).
"""

from .dropped import DroppedRuns
from .errors import LogCorruptError, LogError, LogUnavailableError, LogVersionError, RunNotFoundError
from .export import read_runs, write_runs
from .filters import LogFilter, parse_when
from .log import RunLog, migrate, open_log
from .migrations import LATEST as SCHEMA_VERSION
from .records import CandidateRecord, RunRecord, build_error_record, build_record
from .settings import LogSettings, default_log_path
from .stats import ModelStats, model_stats
from .suggestions import Suggestion, SuggestionStats, record_acceptance, record_suggestion, suggestion_stats
from .text import TextPolicy
from .writer import LogWriter, WriterStats

__all__ = [
    "SCHEMA_VERSION",
    "CandidateRecord",
    "DroppedRuns",
    "LogCorruptError",
    "LogError",
    "LogFilter",
    "LogSettings",
    "LogUnavailableError",
    "LogVersionError",
    "LogWriter",
    "ModelStats",
    "RunLog",
    "RunNotFoundError",
    "RunRecord",
    "TextPolicy",
    "WriterStats",
    "Suggestion",
    "SuggestionStats",
    "build_error_record",
    "build_record",
    "default_log_path",
    "migrate",
    "model_stats",
    "open_log",
    "parse_when",
    "read_runs",
    "record_acceptance",
    "record_suggestion",
    "suggestion_stats",
    "write_runs",
]
