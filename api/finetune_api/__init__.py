"""The API models: the single source of truth for CRDs, validation, the operator and the trainer."""

from .common import API_VERSION, GROUP, VERSION
from .job import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, TERMINAL_PHASES
from .queue import FineTuneQueue, FineTuneQueueSpec, FineTuneQueueStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "FineTuneQueue",
    "FineTuneQueueSpec",
    "FineTuneQueueStatus",
    "TERMINAL_PHASES",
]
