"""The NAVER Cloud Live Station simulator: `NaverSim(access_key, secret_key, clock)`, served by
`sim.app()`.

model.py (gateway and Live Station errors, event descriptions), state.py (`NaverSim`: channels,
events, callbacks, signature check and the kit's hooks), routes.py (API handlers and the
vendor's own `/_sim` routes).
"""

from monitor.sim.naver.model import GATEWAY_ERRORS, LIVE_STATION_CODES
from monitor.sim.naver.state import NaverSim

__all__ = ["GATEWAY_ERRORS", "LIVE_STATION_CODES", "NaverSim"]
