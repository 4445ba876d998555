"""The SmartSTREAM Live API (and Ingest API jobs) simulator: `SmartstreamSim(...)`, served by
`sim.app()`.

model.py (statuses, error codes, live events, jobs, time formats), state.py (`SmartstreamSim`:
the account's state, its controls and the kit's hooks), routes.py (handlers and paging).
"""

from monitor.sim.smartstream.model import (
    ENCODE_STATUS_ERROR,
    ENCODE_STATUS_PENDING,
    ENCODE_STATUS_RUNNING,
    ENCODE_STATUS_STOPPED,
    JOB_COMPLETE,
    JOB_ENCODING,
    JOB_FAILED,
    JOB_QUEUED,
    MESSAGES,
    Job,
    LiveEvent,
    SimError,
)
from monitor.sim.smartstream.state import SmartstreamSim

__all__ = [
    "ENCODE_STATUS_ERROR",
    "ENCODE_STATUS_PENDING",
    "ENCODE_STATUS_RUNNING",
    "ENCODE_STATUS_STOPPED",
    "JOB_COMPLETE",
    "JOB_ENCODING",
    "JOB_FAILED",
    "JOB_QUEUED",
    "MESSAGES",
    "Job",
    "LiveEvent",
    "SimError",
    "SmartstreamSim",
]
