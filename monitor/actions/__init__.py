"""The action runner and its guard: restart, hls_dump, id3_event.

    component(deps)   the daemon's part: the outbox consumer, the worker task, the routes

Modules: config (the `actions:` section), audit (the tables), guard (the stages), perform
(verbs and verification), dumps (stop jobs, info files, disk budget), runner (consumer and
worker), api (routes), metrics.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.component import Deps, Parts


def component(deps: Deps) -> AbstractAsyncContextManager[Parts]:
    # Imported here: monitor.config imports monitor.actions.config, and the runner imports
    # what imports the config.
    from monitor.actions.service import actions_component

    return actions_component(deps)
