"""Simulator of the OvenMediaEngine REST API v1, answering as reference/ovenmediaengine.md says
OME does. `OmeSim` holds the state and its controls; `sim.app()` serves it.

Every counter is a function of the injected clock, evaluated when a request arrives: there are no
background tasks and no sleeps (the kit's `delay` fault aside). Faults, the schedule, the call log
and the `/_sim` API come from the shared kit (`monitor.sim.kit`, `monitor.sim.control`).

Where the notes and the gitbook seed disagree, the behaviour observed on a running OME 0.20 wins.
Nothing here is shared with `monitor.sources`: the simulator answers from the documents only.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from monitor.sim.control import Handler, Simulator
from monitor.sim.kit import Clock, Fault
from monitor.sim.ome.dumps import finish_dump_files
from monitor.sim.ome.model import (
    DEFAULT_PUBLISHERS,
    PUSH_STATES,
    RECORD_STATES,
    App,
    Meter,
    OmeError,
    SentEvent,
    Stream,
    StreamSpec,
    Task,
    Vhost,
    connection_keys,
    controller_not_found,
    parse_version,
    split_path,
)
from monitor.sim.ome.replies import error_response
from monitor.sim.ome.routes import add_routes
from monitor.sim.ome.tasks import start_push, start_record


class OmeSim(Simulator):
    """The state of one simulated OME server and the controls that act on it.

    Paths name things as `"vhost/app/stream"` (streams) and `"vhost/app"` (apps). Every public
    mutator first applies schedule entries that are due, then acts at the current clock time;
    a scheduled one acts at the time it was due.
    """

    ACTIONS = (
        "add_app",
        "add_stream",
        "remove_stream",
        "stall",
        "resume",
        "vanish",
        "set_connections",
        "set_bitrate",
        "add_push",
        "add_record",
        "set_push_state",
        "set_record_state",
    )

    def __init__(
        self, access_token: str, clock: Clock = time.time, version: str = "0.20.0"
    ) -> None:
        super().__init__(clock)
        self.access_token = access_token
        self.version_text = version
        self.version = parse_version(version)
        self.connection_keys = connection_keys(self.version)
        self.server = Meter.start(self.started_at, self.connection_keys)
        self.vhosts: dict[str, Vhost] = {}
        self.events: list[SentEvent] = []
        self._actions: dict[str, Callable[..., None]] = {
            "add_app": self._add_app,
            "add_stream": self._add_stream,
            "remove_stream": self._remove_stream,
            "stall": self._stall,
            "resume": self._resume,
            "vanish": self._vanish,
            "set_connections": self._set_connections,
            "set_bitrate": self._set_bitrate,
            "add_push": self._add_push,
            "add_record": self._add_record,
            "set_push_state": self._set_push_state,
            "set_record_state": self._set_record_state,
        }

    # ---- layouts ---------------------------------------------------------------------------------

    @classmethod
    def with_layout(
        cls,
        access_token: str,
        vhosts: int = 1,
        apps: int = 50,
        streams_per_app: int = 200,
        clock: Clock = time.time,
        version: str = "0.20.0",
        **spec: Any,
    ) -> OmeSim:
        """A server of vhosts x apps x streams_per_app streams (`default`/`vhostN`, `appN`, `streamN`)."""
        sim = cls(access_token, clock, version)
        now = sim.tick()
        stream_spec = StreamSpec.from_kwargs(spec)
        sim._check_viewers(dict(stream_spec.connections))
        for v in range(vhosts):
            vhost = "default" if v == 0 else f"vhost{v}"
            for a in range(apps):
                app = sim._ensure_app(now, vhost, f"app{a}")
                for s in range(streams_per_app):
                    sim._publish(now, app, f"stream{s}", stream_spec)
        return sim

    # ---- public controls (each is also an action for `schedule` and POST /_sim/actions/<name>) --

    def add_app(self, app: str, publishers: Iterable[str] | None = None) -> None:
        """Create an app (or change its publishers). Without `push`/`file`, :pushes/:records 404."""
        self._run("add_app", app=app, publishers=publishers)

    def add_stream(self, stream: str, **spec: Any) -> None:
        """Publish a stream; `spec` are `StreamSpec` fields, `connections` a {publisher: viewers} map."""
        self._run("add_stream", stream=stream, **spec)

    def remove_stream(self, stream: str, reconnect_after: float | None = None) -> None:
        """End a publish (the stream is gone); it publishes again `reconnect_after` seconds later."""
        self._run("remove_stream", stream=stream, reconnect_after=reconnect_after)

    def stall(self, stream: str) -> None:
        """Ingest stops while the stream stays listed: bytes and lastRecvTime freeze, throughput too."""
        self._run("stall", stream=stream)

    def resume(self, stream: str) -> None:
        self._run("resume", stream=stream)

    def vanish(self, stream: str, vanished: bool = True) -> None:
        """Still listed, but info, stats and actions answer 404 (gone between list and stats)."""
        self._run("vanish", stream=stream, vanished=vanished)

    def set_connections(self, stream: str, connections: Mapping[str, int]) -> None:
        self._run("set_connections", stream=stream, connections=connections)

    def set_bitrate(self, stream: str, bitrate: int) -> None:
        self._run("set_bitrate", stream=stream, bitrate=bitrate)

    def add_push(
        self,
        app: str,
        id: str,
        stream: str,
        url: str,
        protocol: str = "rtmp",
        stream_key: str = "",
        variant_names: Iterable[str] = (),
    ) -> None:
        """Start a push as `:startPush` would (`stream` is the output stream name)."""
        self._run(
            "add_push",
            app=app,
            id=id,
            stream=stream,
            url=url,
            protocol=protocol,
            stream_key=stream_key,
            variant_names=list(variant_names),
        )

    def add_record(self, app: str, id: str, stream: str, **options: Any) -> None:
        """Start a record as `:startRecord` would; options: interval, schedule, segmentation_rule,
        file_path, info_path, metadata."""
        self._run("add_record", app=app, id=id, stream=stream, **options)

    def set_push_state(self, app: str, id: str, state: str | None) -> None:
        """Force a push's state (e.g. "error"); None lets it follow its stream again."""
        self._run("set_push_state", app=app, id=id, state=state)

    def set_record_state(self, app: str, id: str, state: str | None) -> None:
        self._run("set_record_state", app=app, id=id, state=state)

    def stream_paths(self) -> list[str]:
        return [
            stream.path
            for vhost in self.vhosts.values()
            for app in vhost.apps.values()
            for stream in app.streams.values()
        ]

    def authorize(self, header: str | None) -> None:
        """Check `Authorization` exactly as OME's root controller does; raise a 401 OmeError."""
        if not header:
            raise OmeError(401, "Authorization header is required to call API")
        tokens = header.split(" ")
        if len(tokens) != 2:
            raise OmeError(401, "Invalid authorization header")
        scheme, credential = tokens
        if scheme.upper() != "BASIC":
            raise OmeError(401, f"Not supported credential type: {scheme}")
        try:
            decoded = base64.b64decode(credential, validate=True)
        except (binascii.Error, ValueError):
            raise OmeError(401, "Invalid credential format") from None
        if decoded != self.access_token.encode():
            raise OmeError(401, "Invalid credential")

    # ---- HTTP (the kit's hooks) ------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        add_routes(app)

    def error_body(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        if fault.message:
            message = fault.message
        elif status == 401:
            message = "Invalid credential"
        elif status == 404:
            message = "Controller not found"
        else:
            try:
                message = HTTPStatus(status).phrase
            except ValueError:
                message = "Error"
        return error_response(OmeError(status, message))

    async def answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            # auth comes first, even before "Controller not found", as in OME's root controller
            self.authorize(request.headers.get("Authorization"))
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status in (404, 405):
                    raise controller_not_found() from None
                raise
        except OmeError as err:
            return error_response(err)

    def vendor_state(self) -> dict[str, Any]:
        streams = {
            stream.path: {
                "stalled": stream.stalled,
                "vanished": stream.vanished,
                "bitrate": stream.bitrate,
            }
            for vhost in self.vhosts.values()
            for app in vhost.apps.values()
            for stream in app.streams.values()
        }
        return {"version": self.version_text, "streams": streams}

    # ---- lookups (KeyError for the Python API; the HTTP layer has its own 404s) ------------------

    def find_app(self, app: str) -> App:
        vhost_name, app_name = split_path(app, 2)
        vhost = self.vhosts.get(vhost_name)
        if vhost is None or app_name not in vhost.apps:
            raise KeyError(f"no app {app}")
        return vhost.apps[app_name]

    def find_stream(self, stream: str) -> Stream:
        vhost, app, name = split_path(stream, 3)
        found = self.find_app(f"{vhost}/{app}").streams.get(name)
        if found is None:
            raise KeyError(f"no stream {stream}")
        return found

    # ---- actions: (now, **kwargs) ----------------------------------------------------------------

    def _run(self, action: str, **kwargs: Any) -> None:
        self._actions[action](self.tick(), **kwargs)

    def run_scheduled(self, action: str, when: float, kwargs: dict[str, Any]) -> None:
        state_action = self._actions.get(action)
        if state_action is None:
            super().run_scheduled(action, when, kwargs)
        else:
            state_action(when, **kwargs)  # at the time it was due, not the time it is noticed

    def _add_app(self, now: float, app: str, publishers: Iterable[str] | None = None) -> None:
        vhost_name, app_name = split_path(app, 2)
        self._ensure_app(now, vhost_name, app_name, publishers)

    def _ensure_app(
        self, now: float, vhost_name: str, app_name: str, publishers: Iterable[str] | None = None
    ) -> App:
        vhost = self.vhosts.get(vhost_name)
        if vhost is None:
            vhost = self.vhosts[vhost_name] = Vhost(
                vhost_name, Meter.start(now, self.connection_keys)
            )
        app = vhost.apps.get(app_name)
        if app is None:
            meter = Meter.start(now, self.connection_keys)
            app = vhost.apps[app_name] = App(vhost, app_name, DEFAULT_PUBLISHERS, meter)
        if publishers is not None:
            app.publishers = frozenset(publishers)
        return app

    def _add_stream(self, now: float, stream: str, **spec: Any) -> None:
        vhost_name, app_name, name = split_path(stream, 3)
        stream_spec = StreamSpec.from_kwargs(spec)
        self._check_viewers(dict(stream_spec.connections))
        self._publish(now, self._ensure_app(now, vhost_name, app_name), name, stream_spec)

    def _publish(self, now: float, app: App, name: str, spec: StreamSpec) -> Stream:
        if name in app.streams:
            raise ValueError(f"stream {app.path}/{name} already exists")
        meter = Meter.start(now, self.connection_keys)
        stream = Stream(app, name, spec, meter, bitrate=spec.bitrate, stalled=spec.stalled)
        taken = [out for out in stream.outputs if out in app.outputs]
        if taken:
            raise ValueError(f"output stream(s) {taken} already exist in {app.path}")
        app.streams[name] = stream
        for out in stream.outputs:
            app.outputs[out] = stream
        self._update(now, stream, viewers=dict(spec.connections), begin=True)
        return stream

    def _update(
        self,
        now: float,
        stream: Stream,
        *,
        stalled: bool | None = None,
        bitrate: int | None = None,
        viewers: Mapping[str, int] | None = None,
        begin: bool = False,
        end: bool = False,
    ) -> None:
        """Change a stream and carry the rate and viewer deltas up to app, vhost and server.

        `begin` marks a new publish: nothing of it has been counted anywhere yet.
        """
        old_in, old_out = (0, 0) if begin else stream.rates()
        old_viewers = {} if begin else dict(stream.viewers)
        if stalled is not None:
            stream.stalled = stalled
        if bitrate is not None:
            stream.bitrate = bitrate
        if viewers is not None:
            stream.viewers = {key: count for key, count in viewers.items() if count}
        if end:
            stream.ended_at = now
            stream.viewers = {}
        new_in, new_out = stream.rates()
        d_viewers = {
            key: stream.viewers.get(key, 0) - old_viewers.get(key, 0)
            for key in old_viewers.keys() | stream.viewers.keys()
        }
        d_viewers = {key: delta for key, delta in d_viewers.items() if delta}
        for meter in (stream.meter, stream.app.meter, stream.app.vhost.meter, self.server):
            meter.change(now, new_in - old_in, new_out - old_out, d_viewers)

    def unpublish(self, now: float, stream: Stream, reconnect_after: float | None = None) -> None:
        """End a publish; with `reconnect_after`, the encoder publishes the same spec again."""
        app = stream.app
        self._update(now, stream, end=True)
        del app.streams[stream.name]
        for out in stream.outputs:
            if app.outputs.get(out) is stream:
                del app.outputs[out]
        for dumps in stream.dumps.values():
            for dump in dumps.values():
                if dump.enabled:
                    # the LL-HLS stream under the dump is gone: the dump cannot complete
                    dump.enabled = False
                    finish_dump_files(dump, now, "Error")
        if reconnect_after is not None:
            again = stream.spec.kwargs()
            at = now - self.started_at + float(reconnect_after)
            self.schedule(at, "add_stream", stream=stream.path, **again)

    def _remove_stream(self, now: float, stream: str, reconnect_after: float | None = None) -> None:
        self.unpublish(now, self.find_stream(stream), reconnect_after)

    def _stall(self, now: float, stream: str) -> None:
        self._update(now, self.find_stream(stream), stalled=True)

    def _resume(self, now: float, stream: str) -> None:
        self._update(now, self.find_stream(stream), stalled=False)

    def _vanish(self, now: float, stream: str, vanished: bool = True) -> None:
        self.find_stream(stream).vanished = bool(vanished)

    def _set_connections(self, now: float, stream: str, connections: Mapping[str, int]) -> None:
        self._check_viewers(connections)
        self._update(now, self.find_stream(stream), viewers=connections)

    def _set_bitrate(self, now: float, stream: str, bitrate: int) -> None:
        if int(bitrate) < 0:
            raise ValueError("bitrate must be >= 0")
        self._update(now, self.find_stream(stream), bitrate=int(bitrate))

    def _check_viewers(self, viewers: Mapping[str, int]) -> None:
        unknown = sorted(set(viewers) - set(self.connection_keys))
        if unknown:
            raise ValueError(
                f"connection keys {unknown} do not exist in OME {self.version_text}; "
                f"use {list(self.connection_keys)}"
            )
        if any(int(count) < 0 for count in viewers.values()):
            raise ValueError("connection counts must be >= 0")

    def _add_push(
        self,
        now: float,
        app: str,
        id: str,
        stream: str,
        url: str,
        protocol: str = "rtmp",
        stream_key: str = "",
        variant_names: Iterable[str] = (),
    ) -> None:
        body = {
            "id": id,
            "stream": {"name": stream, "variantNames": list(variant_names)},
            "protocol": protocol,
            "url": url,
            "streamKey": stream_key,
        }
        try:
            start_push(self, self.find_app(app), body, now)
        except OmeError as err:
            raise ValueError(err.message) from None

    def _add_record(self, now: float, app: str, id: str, stream: str, **options: Any) -> None:
        names = {
            "interval": "interval",
            "schedule": "schedule",
            "segmentation_rule": "segmentationRule",
            "file_path": "filePath",
            "info_path": "infoPath",
            "metadata": "metadata",
        }
        unknown = set(options) - set(names)
        if unknown:
            raise TypeError(f"unknown record options {sorted(unknown)}")
        body = {"id": id, "stream": {"name": stream}}
        body.update({names[key]: value for key, value in options.items() if value is not None})
        try:
            start_record(self, self.find_app(app), body, now)
        except OmeError as err:
            raise ValueError(err.message) from None

    def _set_push_state(self, now: float, app: str, id: str, state: str | None) -> None:
        self._force_state(now, self.find_app(app).pushes, id, state, PUSH_STATES)

    def _set_record_state(self, now: float, app: str, id: str, state: str | None) -> None:
        self._force_state(now, self.find_app(app).records, id, state, RECORD_STATES)

    @staticmethod
    def _force_state(
        now: float, tasks: Mapping[str, Task], id: str, state: str | None, allowed: frozenset[str]
    ) -> None:
        if state is not None and state not in allowed:
            raise ValueError(f"state must be one of {sorted(allowed)} or null")
        task = tasks.get(id)
        if task is None:
            raise KeyError(f"no task {id!r}")
        task.forced_state, task.forced_at = state, now
