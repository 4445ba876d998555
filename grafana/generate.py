"""Writes grafana/dashboards/*.json: the dashboards are generated, so that every panel has its
datasource variable, a unit and the same filters. Edit this file, run it, commit both:

    python grafana/generate.py

tests/test_grafana.py fails when the JSON files and this script disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Filters, by the labels each level of entity has. `instance` tells the daemons of a fleet apart.
INST = 'instance=~"$instance"'
S = f'{INST},source=~"$source"'
OME_VHOST = f'{INST},server=~"$source",vhost=~"$vhost"'
OME_APP = f'{OME_VHOST},app=~"$app"'
OME_STREAM = f'{OME_APP},stream=~"$stream"'
MERCHANT = f'{INST},merchant=~"$merchant"'
CHANNEL = f'{INST},channel=~"$channel"'

UP_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> dict:
    t: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "expr": expr}
    if instant:
        t |= {"instant": True, "range": False, "format": "table"}
    else:
        t |= {"instant": False, "range": True, "legendFormat": legend or "__auto"}
    return t


class Board:
    """Panels laid out left to right, two or more to a line, rows across."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.line_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_height
            self.x = 0
            self.line_height = 0

    def panel(
        self,
        kind: str,
        title: str,
        description: str,
        targets: list[dict],
        unit: str,
        *,
        w: int = 12,
        h: int = 8,
        mappings: list | None = None,
        options: dict | None = None,
        custom: dict | None = None,
        thresholds: list | None = None,
        transformations: list | None = None,
        decimals: int | None = None,
    ) -> None:
        if self.x + w > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit}
        if mappings:
            defaults["mappings"] = mappings
        if custom:
            defaults["custom"] = custom
        if decimals is not None:
            defaults["decimals"] = decimals
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        }
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
            "targets": [t | {"refId": chr(ord("A") + n)} for n, t in enumerate(targets)],
        }
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def timeseries(self, title: str, description: str, targets: list[dict], unit: str, **kw):
        kw.setdefault(
            "options",
            {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
        )
        self.panel("timeseries", title, description, targets, unit, **kw)

    def stat(self, title: str, description: str, expr: str, unit: str, **kw):
        kw.setdefault("w", 6)
        kw.setdefault("h", 4)
        kw.setdefault(
            "options",
            {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "none",
                "textMode": "auto",
            },
        )
        self.panel("stat", title, description, [target(expr)], unit, **kw)

    def table(self, title: str, description: str, targets: list[dict], unit: str, **kw):
        kw.setdefault("options", {"showHeader": True, "cellHeight": "sm"})
        kw.setdefault(
            "transformations",
            [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "__name__": True, "job": True}},
                },
            ],
        )
        self.panel("table", title, description, targets, unit, **kw)

    def bars(self, title: str, description: str, expr: str, legend: str, unit: str, **kw):
        kw.setdefault(
            "options",
            {
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showUnfilled": True,
            },
        )
        t = target(expr, legend) | {"instant": True, "range": False}
        self.panel("bargauge", title, description, [t], unit, **kw)

    def states(self, title: str, description: str, targets: list[dict], unit: str, **kw):
        kw.setdefault(
            "options",
            {
                "showValue": "auto",
                "mergeValues": True,
                "rowHeight": 0.9,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            },
        )
        self.panel("state-timeline", title, description, targets, unit, **kw)


def variable_datasource() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "hide": 0,
        "refresh": 1,
        "current": {},
        "options": [],
    }


def variable(name: str, label: str, query: str) -> dict:
    """A multi-value query variable over `label_values(...)`; All means any value."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "regex": "",
    }


def instance_variable() -> dict:
    return variable("instance", "streamwatch", "label_values(streamwatch_build_info, instance)")


def source_variable(kind: str | None = None) -> dict:
    selector = f'{{kind="{kind}",{INST}}}' if kind else f"{{{INST}}}"
    return variable("source", "Source", f"label_values(streamwatch_source_up{selector}, source)")


def dashboard(uid: str, title: str, description: str, variables: list[dict], board: Board):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamwatch"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "type": "dashboards",
                "title": "streamwatch",
                "tags": ["streamwatch"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [variable_datasource(), *variables]},
        "panels": board.panels,
    }


def source_health(b: Board, kind: str) -> None:
    """The three panels every vendor dashboard shows about its own sources."""
    b.states(
        "Source up",
        f"Whether the last poll of each {kind} source succeeded (streamwatch_source_up).",
        [target(f'streamwatch_source_up{{kind="{kind}",{S}}}', "{{source}}")],
        "none",
        w=8,
        mappings=UP_MAPPING,
    )
    b.timeseries(
        "Poll duration (mean)",
        "Mean duration of the polls in each interval.",
        [
            target(
                f'rate(streamwatch_source_poll_duration_seconds_sum{{kind="{kind}",{S}}}[$__rate_interval])'
                f' / rate(streamwatch_source_poll_duration_seconds_count{{kind="{kind}",{S}}}[$__rate_interval])',
                "{{source}}",
            )
        ],
        "s",
        w=8,
    )
    b.timeseries(
        "Effective poll interval",
        "The interval polls really run at: the configured one, or stretched by a slow poll or a rate budget.",
        [
            target(
                f'streamwatch_source_effective_interval_seconds{{kind="{kind}",{S}}}', "{{source}}"
            )
        ],
        "s",
        w=8,
    )


# --- overview -------------------------------------------------------------------------------


def overview() -> dict:
    b = Board()
    b.row("Sources and alerts")
    b.stat(
        "Sources up",
        "Sources whose last poll succeeded.",
        f"sum(streamwatch_source_up{{{S}}})",
        "none",
        thresholds=[{"color": "green", "value": None}],
    )
    b.stat(
        "Sources down",
        "Sources whose last poll failed (or that have not polled yet).",
        f"count(streamwatch_source_up{{{S}}} == 0) or vector(0)",
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.stat(
        "Firing alerts",
        "Alerts firing now, silenced ones included.",
        f'sum(streamwatch_alerts{{{INST},state="firing"}})',
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.stat(
        "Pending alerts",
        "Alerts whose condition holds but whose `for` has not run out.",
        f'sum(streamwatch_alerts{{{INST},state="pending"}})',
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
    )
    b.states(
        "Sources",
        "Up or down, per source, over time.",
        [target(f"streamwatch_source_up{{{S}}}", "{{kind}}/{{source}}")],
        "none",
        mappings=UP_MAPPING,
    )
    b.bars(
        "Firing alerts by rule",
        "Firing alerts now, per rule.",
        f'sum by (alertname) (streamwatch_alerts{{{INST},state="firing"}})',
        "{{alertname}}",
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.timeseries(
        "Alerts over time",
        "Firing and pending alerts, per rule.",
        [
            target(
                f"sum by (alertname, state) (streamwatch_alerts{{{INST}}}) > 0",
                "{{alertname}} {{state}}",
            )
        ],
        "none",
    )
    b.timeseries(
        "Poll errors by reason",
        "Failed polls per second, by source and failure class.",
        [
            target(
                f"sum by (kind, source, reason) (rate(streamwatch_source_poll_errors_total{{{S}}}[$__rate_interval]))",
                "{{kind}}/{{source}} {{reason}}",
            )
        ],
        "reqps",
    )
    b.row("Actions and notifications")
    b.bars(
        "Actions in the time range",
        "Remediation attempts per action and result (ok, failed, skipped_cooldown, skipped_budget, dry_run).",
        f"sum by (action, result) (increase(streamwatch_actions_total{{{INST}}}[$__range]))",
        "{{action}} {{result}}",
        "short",
        decimals=0,
        w=8,
    )
    b.timeseries(
        "Actions",
        "Remediation attempts per second, by action and result.",
        [
            target(
                f"sum by (action, result) (rate(streamwatch_actions_total{{{INST}}}[$__rate_interval]))",
                "{{action}} {{result}}",
            )
        ],
        "ops",
        w=8,
    )
    b.timeseries(
        "Action duration (p95)",
        "95th percentile of how long an action took, by action.",
        [
            target(
                "histogram_quantile(0.95, sum by (le, action) "
                f"(rate(streamwatch_action_duration_seconds_bucket{{{INST}}}[$__rate_interval])))",
                "{{action}}",
            )
        ],
        "s",
        w=8,
    )
    b.timeseries(
        "HLS dumps by state",
        "HLS dumps this daemon made (hls_dump actions), by state.",
        [target(f"sum by (state) (streamwatch_hls_dumps{{{INST}}})", "{{state}}")],
        "short",
        decimals=0,
        w=24,
        h=6,
    )
    b.bars(
        "Notifications in the time range",
        "Notifications per notifier and result.",
        f"sum by (notifier, result) (increase(streamwatch_notifications_total{{{INST}}}[$__range]))",
        "{{notifier}} {{result}}",
        "short",
        decimals=0,
        w=8,
    )
    b.timeseries(
        "Notifications",
        "Notifications per second, by notifier and result.",
        [
            target(
                f"sum by (notifier, result) (rate(streamwatch_notifications_total{{{INST}}}[$__rate_interval]))",
                "{{notifier}} {{result}}",
            )
        ],
        "ops",
        w=8,
    )
    b.timeseries(
        "Notification duration (p95)",
        "95th percentile of how long a delivery took, by notifier.",
        [
            target(
                "histogram_quantile(0.95, sum by (le, notifier) "
                f"(rate(streamwatch_notification_duration_seconds_bucket{{{INST}}}[$__rate_interval])))",
                "{{notifier}}",
            )
        ],
        "s",
        w=8,
    )
    return dashboard(
        "streamwatch-overview",
        "streamwatch / Overview",
        "Sources up and down, firing alerts, actions and notifications.",
        [instance_variable(), source_variable()],
        b,
    )


# --- OME ------------------------------------------------------------------------------------


def ome() -> dict:
    b = Board()
    b.row("Streams")
    b.states(
        "Streams present",
        "Listed on the server (1) or expected but absent (0).",
        [target(f"ome_stream_present{{{OME_STREAM}}}", "{{vhost}}/{{app}}/{{stream}}")],
        "none",
        mappings=[
            {
                "type": "value",
                "options": {
                    "0": {"text": "absent", "color": "red", "index": 0},
                    "1": {"text": "present", "color": "green", "index": 1},
                },
            }
        ],
    )
    b.table(
        "Inputs",
        "Each stream's input type (stream info).",
        [target(f"ome_stream_info{{{OME_STREAM}}}", instant=True)],
        "none",
    )
    b.timeseries(
        "Viewers",
        "Playback sessions per stream, all protocols.",
        [
            target(
                f"sum by (vhost, app, stream) (ome_stream_connections{{{OME_STREAM}}})",
                "{{vhost}}/{{app}}/{{stream}}",
            )
        ],
        "short",
    )
    b.timeseries(
        "Connections by protocol",
        "Playback sessions by publisher protocol, as OME names them (protocols with none are hidden).",
        [
            target(
                f"sum by (vhost, app, stream, protocol) (ome_stream_connections{{{OME_STREAM}}}) > 0",
                "{{app}}/{{stream}} {{protocol}}",
            )
        ],
        "short",
    )
    b.timeseries(
        "Throughput",
        "OME's avgThroughputIn/Out: bits per second over its last second. It freezes when ingest stops.",
        [
            target(
                f"ome_stream_throughput_in_bits_per_second{{{OME_STREAM}}}",
                "{{app}}/{{stream}} in",
            ),
            target(
                f"ome_stream_throughput_out_bits_per_second{{{OME_STREAM}}}",
                "{{app}}/{{stream}} out",
            ),
        ],
        "bps",
    )
    b.timeseries(
        "Bytes in and out",
        "Rate of totalBytesIn/Out: the figure that stops when ingest stops.",
        [
            target(
                f"rate(ome_stream_bytes_in_total{{{OME_STREAM}}}[$__rate_interval])",
                "{{app}}/{{stream}} in",
            ),
            target(
                f"rate(ome_stream_bytes_out_total{{{OME_STREAM}}}[$__rate_interval])",
                "{{app}}/{{stream}} out",
            ),
        ],
        "Bps",
    )
    b.timeseries(
        "Time since last input",
        "Age of lastRecvTime: OmeIngestStalled fires past 10 s.",
        [
            target(
                f"time() - ome_stream_last_recv_timestamp_seconds{{{OME_STREAM}}}",
                "{{app}}/{{stream}}",
            )
        ],
        "s",
        w=8,
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 10}],
        custom={"thresholdsStyle": {"mode": "line"}},
    )
    b.timeseries(
        "Time since last output",
        "Age of lastSentTime.",
        [
            target(
                f"time() - ome_stream_last_sent_timestamp_seconds{{{OME_STREAM}}}",
                "{{app}}/{{stream}}",
            )
        ],
        "s",
        w=8,
    )
    b.timeseries(
        "Time since publish",
        "Age of createdTime: drops to zero when the stream is republished.",
        [
            target(
                f"time() - ome_stream_created_timestamp_seconds{{{OME_STREAM}}}",
                "{{app}}/{{stream}}",
            )
        ],
        "s",
        w=8,
    )
    b.row("Input tracks")
    b.timeseries(
        "Video bitrate (measured)",
        "Each input video track's measured bitrate (bitrateLatest, else bitrateAvg). OmeInputBitrateLow fires below 300 kbit/s.",
        [
            target(
                f'ome_stream_track_bitrate_bits_per_second{{{OME_STREAM},type="video"}}',
                "{{app}}/{{stream}} #{{track}} {{codec}}",
            )
        ],
        "bps",
    )
    b.timeseries(
        "Audio bitrate (measured)",
        "Each input audio track's measured bitrate.",
        [
            target(
                f'ome_stream_track_bitrate_bits_per_second{{{OME_STREAM},type="audio"}}',
                "{{app}}/{{stream}} #{{track}} {{codec}}",
            )
        ],
        "bps",
    )
    b.timeseries(
        "Framerate",
        "Each input video track's measured framerate. OmeInputFramerateDrop fires below 20.",
        [
            target(
                f'ome_stream_track_framerate{{{OME_STREAM},type="video"}}',
                "{{app}}/{{stream}} #{{track}}",
            )
        ],
        "suffix:fps",
    )
    b.timeseries(
        "Keyframe interval",
        "GOP length in seconds: keyframe interval (frames) / framerate. OmeKeyframeIntervalLong fires past 4 s.",
        [
            target(
                f'ome_stream_track_keyframe_interval{{{OME_STREAM},type="video"}}'
                f' / (ome_stream_track_framerate{{{OME_STREAM},type="video"}} > 0)',
                "{{app}}/{{stream}} #{{track}}",
            )
        ],
        "s",
    )
    b.timeseries(
        "Keyframe interval (frames)",
        "OME's keyFrameInterval of each input video track, in frames.",
        [
            target(
                f'ome_stream_track_keyframe_interval{{{OME_STREAM},type="video"}}',
                "{{app}}/{{stream}} #{{track}}",
            )
        ],
        "suffix:frames",
    )
    b.table(
        "Resolution",
        "Width and height of each input video track.",
        [
            target(f'ome_stream_track_width{{{OME_STREAM},type="video"}}', instant=True),
            target(f'ome_stream_track_height{{{OME_STREAM},type="video"}}', instant=True),
        ],
        "suffix:px",
    )
    b.row("Applications and virtual hosts")
    b.timeseries(
        "Application connections by protocol",
        "Playback sessions per application and protocol (protocols with none are hidden).",
        [
            target(
                f"sum by (vhost, app, protocol) (ome_app_connections{{{OME_APP}}}) > 0",
                "{{vhost}}/{{app}} {{protocol}}",
            )
        ],
        "short",
        w=8,
    )
    b.timeseries(
        "Application throughput",
        "avgThroughputIn/Out per application.",
        [
            target(f"ome_app_throughput_in_bits_per_second{{{OME_APP}}}", "{{vhost}}/{{app}} in"),
            target(f"ome_app_throughput_out_bits_per_second{{{OME_APP}}}", "{{vhost}}/{{app}} out"),
        ],
        "bps",
        w=8,
    )
    b.timeseries(
        "Application bytes in and out",
        "Rate of totalBytesIn/Out per application.",
        [
            target(
                f"rate(ome_app_bytes_in_total{{{OME_APP}}}[$__rate_interval])",
                "{{vhost}}/{{app}} in",
            ),
            target(
                f"rate(ome_app_bytes_out_total{{{OME_APP}}}[$__rate_interval])",
                "{{vhost}}/{{app}} out",
            ),
        ],
        "Bps",
        w=8,
    )
    b.timeseries(
        "Virtual host connections by protocol",
        "Playback sessions per virtual host and protocol (protocols with none are hidden).",
        [
            target(
                f"sum by (server, vhost, protocol) (ome_vhost_connections{{{OME_VHOST}}}) > 0",
                "{{server}} {{vhost}} {{protocol}}",
            )
        ],
        "short",
        w=8,
    )
    b.timeseries(
        "Virtual host throughput",
        "avgThroughputIn/Out per virtual host.",
        [
            target(
                f"ome_vhost_throughput_in_bits_per_second{{{OME_VHOST}}}", "{{server}} {{vhost}} in"
            ),
            target(
                f"ome_vhost_throughput_out_bits_per_second{{{OME_VHOST}}}",
                "{{server}} {{vhost}} out",
            ),
        ],
        "bps",
        w=8,
    )
    b.timeseries(
        "Virtual host bytes in and out",
        "Rate of totalBytesIn/Out per virtual host.",
        [
            target(
                f"rate(ome_vhost_bytes_in_total{{{OME_VHOST}}}[$__rate_interval])",
                "{{server}} {{vhost}} in",
            ),
            target(
                f"rate(ome_vhost_bytes_out_total{{{OME_VHOST}}}[$__rate_interval])",
                "{{server}} {{vhost}} out",
            ),
        ],
        "Bps",
        w=8,
    )
    b.row("Pushes and recordings")
    b.stat(
        "Pushes in error",
        "Push tasks whose state is error (OmePushFailed).",
        f'sum(ome_push_state{{{OME_APP},state="error"}})',
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.stat(
        "Recordings in error",
        "Record tasks whose state is error (OmeRecordFailed).",
        f'sum(ome_record_state{{{OME_APP},state="error"}})',
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.timeseries(
        "Push sent bytes",
        "Rate of each push's totalsentBytes.",
        [
            target(
                f"rate(ome_push_sent_bytes_total{{{OME_APP}}}[$__rate_interval])",
                "{{vhost}}/{{app}} {{id}}",
            )
        ],
        "Bps",
    )
    b.table(
        "Push states",
        "The current state of each push task.",
        [target(f"ome_push_state{{{OME_APP}}} == 1", instant=True)],
        "none",
    )
    b.table(
        "Recording states",
        "The current state of each record task.",
        [target(f"ome_record_state{{{OME_APP}}} == 1", instant=True)],
        "none",
    )
    b.row("Polling")
    source_health(b, "ome")
    return dashboard(
        "streamwatch-ome",
        "streamwatch / OvenMediaEngine",
        "Per virtual host, application and stream: connections, throughput, input tracks, pushes and recordings.",
        [
            instance_variable(),
            source_variable("ome"),
            variable(
                "vhost",
                "Virtual host",
                f'label_values(ome_vhost_created_timestamp_seconds{{{INST},server=~"$source"}}, vhost)',
            ),
            variable(
                "app",
                "Application",
                f"label_values(ome_app_created_timestamp_seconds{{{OME_VHOST}}}, app)",
            ),
            variable("stream", "Stream", f"label_values(ome_stream_present{{{OME_APP}}}, stream)"),
        ],
        b,
    )


# --- SmartSTREAM ----------------------------------------------------------------------------


def smartstream() -> dict:
    b = Board()
    b.row("Live events")
    b.stat(
        "Live events",
        "Live events listed by the Live API.",
        f"count(smartstream_live_event_info{{{MERCHANT}}}) or vector(0)",
        "none",
    )
    b.stat(
        "Live events encoding",
        "Live events whose encode_status is encode_status_running.",
        f'sum(smartstream_live_event_encode_status{{{MERCHANT},status="encode_status_running"}})',
        "none",
    )
    b.stat(
        "Live events in error",
        "Live events whose encode_status names an error or a failure (SmartstreamLiveEventEncodeError).",
        f'count(smartstream_live_event_encode_status{{{MERCHANT},status=~"(?i).*(error|fail).*"}} == 1) or vector(0)',
        "none",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    )
    b.stat(
        "Ingest jobs",
        "Ingest jobs listed by the Ingest API.",
        f"count(smartstream_job_encode_status{{{MERCHANT}}} == 1) or vector(0)",
        "none",
    )
    b.timeseries(
        "Live events by status",
        "Live events per encode_status.",
        [
            target(
                f"count by (status) (smartstream_live_event_encode_status{{{MERCHANT}}} == 1)",
                "{{status}}",
            )
        ],
        "short",
        decimals=0,
    )
    b.table(
        "Live events",
        "Each live event with its name, reference and current encode_status.",
        [
            target(
                f"(smartstream_live_event_encode_status{{{MERCHANT}}} == 1)"
                " * on (instance, merchant, live_event) group_left (name, ref_id)"
                f" smartstream_live_event_info{{{MERCHANT}}}",
                instant=True,
            )
        ],
        "none",
    )
    b.row("Ingest jobs")
    b.timeseries(
        "Jobs by status",
        "Ingest jobs per encode_status (an integer whose meanings SmartSTREAM does not publish).",
        [
            target(
                f"count by (status) (smartstream_job_encode_status{{{MERCHANT}}} == 1)",
                "status {{status}}",
            )
        ],
        "short",
        decimals=0,
    )
    b.table(
        "Jobs",
        "Each ingest job and its current encode_status. The job id is in `exported_job`:"
        " Prometheus keeps its own `job` label.",
        [target(f"smartstream_job_encode_status{{{MERCHANT}}} == 1", instant=True)],
        "none",
    )
    b.row("Polling")
    source_health(b, "smartstream")
    return dashboard(
        "streamwatch-smartstream",
        "streamwatch / SmartSTREAM",
        "Live events and ingest jobs by status.",
        [
            instance_variable(),
            source_variable("smartstream"),
            variable(
                "merchant",
                "Merchant",
                f"label_values(smartstream_live_event_info{{{INST}}}, merchant)",
            ),
        ],
        b,
    )


# --- NAVER ----------------------------------------------------------------------------------


def naver() -> dict:
    b = Board()
    b.row("Channels")
    b.bars(
        "Channels by status",
        "Live Station channels per status now.",
        f"count by (status) (naver_channel_status{{{CHANNEL}}} == 1)",
        "{{status}}",
        "short",
        decimals=0,
    )
    b.table(
        "Channels",
        "Each channel, its name and current status.",
        [target(f"naver_channel_status{{{CHANNEL}}} == 1", instant=True)],
        "none",
    )
    b.timeseries(
        "Channel status over time",
        "Channels per status.",
        [target(f"count by (status) (naver_channel_status{{{CHANNEL}}} == 1)", "{{status}}")],
        "short",
        decimals=0,
        w=24,
    )
    b.row("Events")
    b.timeseries(
        "Events by code",
        "Channel events per code in each interval, poll and callback counted once;"
        ' undocumented codes count as "other".',
        [
            target(
                f"sum by (event) (increase(naver_channel_events_total{{{CHANNEL}}}[$__rate_interval]))",
                "{{event}}",
            )
        ],
        "short",
    )
    b.table(
        "Events in the time range",
        "Channel events per channel and code in the dashboard's time range.",
        [
            target(
                f"sum by (channel, event) (increase(naver_channel_events_total{{{CHANNEL}}}[$__range]))",
                instant=True,
            )
        ],
        "short",
        decimals=0,
    )
    b.timeseries(
        "Callbacks by result",
        "Event callbacks NAVER posted to this daemon: accepted, bad_request, rejected_token.",
        [
            target(
                f"sum by (source, result) (rate(streamwatch_callback_requests_total{{{S}}}[$__rate_interval]))",
                "{{source}} {{result}}",
            )
        ],
        "reqps",
        w=24,
    )
    b.row("Polling")
    source_health(b, "naver")
    return dashboard(
        "streamwatch-naver",
        "streamwatch / NAVER Live Station",
        "Channels by status, events by code.",
        [
            instance_variable(),
            source_variable("naver"),
            variable(
                "channel", "Channel", f"label_values(naver_channel_status{{{INST}}}, channel)"
            ),
        ],
        b,
    )


# --- streamwatch itself ---------------------------------------------------------------------


def itself() -> dict:
    b = Board()
    b.row("Polling")
    b.states(
        "Sources",
        "Up or down, per source.",
        [target(f"streamwatch_source_up{{{S}}}", "{{kind}}/{{source}}")],
        "none",
        mappings=UP_MAPPING,
    )
    b.timeseries(
        "Poll duration",
        "95th percentile and mean duration of a poll, per source.",
        [
            target(
                "histogram_quantile(0.95, sum by (le, kind, source) "
                f"(rate(streamwatch_source_poll_duration_seconds_bucket{{{S}}}[$__rate_interval])))",
                "{{kind}}/{{source}} p95",
            ),
            target(
                f"rate(streamwatch_source_poll_duration_seconds_sum{{{S}}}[$__rate_interval])"
                f" / rate(streamwatch_source_poll_duration_seconds_count{{{S}}}[$__rate_interval])",
                "{{kind}}/{{source}} mean",
            ),
        ],
        "s",
    )
    b.timeseries(
        "Poll errors by reason and code",
        "Failed polls per second by failure class (timeout, connect, unauthorized, http_4xx,"
        " http_5xx, bad_response, rate_limited) and the vendor's error code.",
        [
            target(
                "sum by (kind, source, reason, code) "
                f"(rate(streamwatch_source_poll_errors_total{{{S}}}[$__rate_interval]))",
                "{{kind}}/{{source}} {{reason}} {{code}}",
            )
        ],
        "reqps",
    )
    b.table(
        "Poll errors in the time range",
        "Failed polls per source, reason and code in the dashboard's time range.",
        [
            target(
                "sum by (kind, source, reason, code) "
                f"(increase(streamwatch_source_poll_errors_total{{{S}}}[$__range]))",
                instant=True,
            )
        ],
        "short",
        decimals=0,
    )
    b.timeseries(
        "Effective poll interval",
        "The interval polls really run at: the configured one, or stretched by a slow poll or a rate budget.",
        [target(f"streamwatch_source_effective_interval_seconds{{{S}}}", "{{kind}}/{{source}}")],
        "s",
    )
    b.timeseries(
        "Requests held back by a rate budget",
        "Requests delayed or left out to stay under a rate limit (SmartSTREAM).",
        [
            target(
                "sum by (kind, source) "
                f"(rate(streamwatch_source_requests_throttled_total{{{S}}}[$__rate_interval]))",
                "{{kind}}/{{source}}",
            )
        ],
        "reqps",
    )
    b.timeseries(
        "Retry-After capped",
        "Retry-After values cut to max_retry_after, per source.",
        [
            target(
                "sum by (kind, source) "
                f"(increase(streamwatch_source_retry_after_capped_total{{{S}}}[$__rate_interval]))",
                "{{kind}}/{{source}}",
            )
        ],
        "short",
    )
    b.timeseries(
        "Upstream items skipped",
        "Items left out as unreadable (bad_name, bad_text, bad_event).",
        [
            target(
                "sum by (kind, source, reason) "
                f"(increase(streamwatch_source_items_skipped_total{{{S}}}[$__rate_interval]))",
                "{{kind}}/{{source}} {{reason}}",
            )
        ],
        "short",
    )
    b.row("Scrape cost")
    b.timeseries(
        "Scrape duration",
        "How long Prometheus takes to scrape /metrics (Prometheus' own per-target series).",
        [
            target(
                f"scrape_duration_seconds{{{INST}}} and on (job, instance) streamwatch_build_info",
                "{{instance}}",
            )
        ],
        "s",
    )
    b.timeseries(
        "Samples per scrape",
        "Samples in each scrape of /metrics: grows with the streams, tracks and channels watched.",
        [
            target(
                f"scrape_samples_scraped{{{INST}}} and on (job, instance) streamwatch_build_info",
                "{{instance}}",
            )
        ],
        "short",
    )
    b.timeseries(
        "Rule evaluation time",
        "Time each rule group took at its last evaluation (one snapshot of a source).",
        [
            target(
                f"streamwatch_rule_group_last_duration_seconds{{{INST}}}",
                "{{rule_group}}",
            )
        ],
        "s",
    )
    b.row("Alerts, outbox and state")
    b.timeseries(
        "Alerts by state",
        "Pending and firing alerts, silenced ones included.",
        [target(f"sum by (state) (streamwatch_alerts{{{INST}}})", "{{state}}")],
        "short",
        decimals=0,
    )
    b.timeseries(
        "Outbox pending",
        "Saved transitions each consumer (notifier, action runner) has not handled yet.",
        [target(f"streamwatch_outbox_pending{{{INST}}}", "{{consumer}}")],
        "short",
        decimals=0,
    )
    b.timeseries(
        "Outbox handled and failed",
        "Transitions handled, and batches failed (retried with backoff), per consumer.",
        [
            target(
                f"sum by (consumer) (rate(streamwatch_outbox_handled_total{{{INST}}}[$__rate_interval]))",
                "{{consumer}} handled",
            ),
            target(
                "sum by (consumer) "
                f"(rate(streamwatch_outbox_consumer_errors_total{{{INST}}}[$__rate_interval]))",
                "{{consumer}} failed",
            ),
        ],
        "ops",
    )
    b.timeseries(
        "State writes",
        "Failed writes of alert state and transitions (each retried), and transitions not yet saved.",
        [
            target(
                f"increase(streamwatch_state_write_errors_total{{{INST}}}[$__rate_interval])",
                "{{instance}} write errors",
            ),
            target(f"streamwatch_transitions_unsaved{{{INST}}}", "{{instance}} unsaved"),
        ],
        "short",
    )
    b.row("HTTP and configuration")
    b.timeseries(
        "Callbacks by result",
        "Upstream callbacks received: accepted, bad_request, rejected_token.",
        [
            target(
                "sum by (receiver, source, result) "
                f"(rate(streamwatch_callback_requests_total{{{INST}}}[$__rate_interval]))",
                "{{receiver}} {{source}} {{result}}",
            )
        ],
        "reqps",
    )
    b.timeseries(
        "HTTP connections dropped",
        "Connections closed at http.max_connections: evicted (oldest idle) or refused (all busy).",
        [
            target(
                "sum by (reason) "
                f"(rate(streamwatch_http_connections_dropped_total{{{INST}}}[$__rate_interval]))",
                "{{reason}}",
            )
        ],
        "ops",
    )
    b.stat(
        "Last reload",
        "Whether the last configuration reload succeeded.",
        f"min(streamwatch_config_last_reload_successful{{{INST}}})",
        "none",
        mappings=[
            {
                "type": "value",
                "options": {
                    "0": {"text": "failed", "color": "red", "index": 0},
                    "1": {"text": "ok", "color": "green", "index": 1},
                },
            }
        ],
    )
    b.stat(
        "Last successful reload",
        "When the configuration was last loaded successfully.",
        f"max(streamwatch_config_last_reload_success_timestamp_seconds{{{INST}}}) * 1000",
        "dateTimeFromNow",
    )
    b.table(
        "Versions",
        "The streamwatch version of each daemon.",
        [target(f"streamwatch_build_info{{{INST}}}", instant=True)],
        "none",
    )
    return dashboard(
        "streamwatch-self",
        "streamwatch / streamwatch itself",
        "Polls, errors, effective intervals, scrape cost, outbox and state writes.",
        [instance_variable(), source_variable()],
        b,
    )


BUILDERS = {
    "overview.json": overview,
    "ome.json": ome,
    "smartstream.json": smartstream,
    "naver.json": naver,
    "streamwatch.json": itself,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in BUILDERS.items()}


def main() -> int:
    DASHBOARDS.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (DASHBOARDS / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
