"""The OvenMediaEngine REST API v1 simulator: `OmeSim(access_token, clock)`, served by `sim.app()`.

model.py (state objects and version features), state.py (`OmeSim`: controls and the kit's hooks),
views.py (info, app, push and record JSON), replies.py (envelope, errors, lookups), tasks.py
(pushes and records), dumps.py (`:sendEvent` and HLS dumps), routes.py (handlers and routes).
"""

from monitor.sim.ome.model import (
    PUSH_STATES,
    RECORD_STATES,
    OmeError,
    SentEvent,
    StreamSpec,
    connection_keys,
    parse_version,
)
from monitor.sim.ome.state import OmeSim

__all__ = [
    "PUSH_STATES",
    "RECORD_STATES",
    "OmeError",
    "OmeSim",
    "SentEvent",
    "StreamSpec",
    "connection_keys",
    "parse_version",
]
