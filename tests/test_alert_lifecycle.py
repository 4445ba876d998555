"""The alert state machine: pending → firing → resolved with `for` and `keep_firing_for`,
source-down freeze, the built-in source-down alert, restore after restart, silences."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.alerting.engine import AlertEngine
from monitor.alerting.evaluate import FIRING, INACTIVE, PENDING, SOURCE_DOWN
from monitor.alerting.rules import RuleError, load_rule_files
from monitor.alerting.silences import MaintenanceWindow, Silencer
from monitor.alerting.transitions import Transition
from monitor.labels import Matcher
from monitor.model import Entity, PollFailure, Snapshot, SourceRef
from monitor.sources import ENTITY_KINDS
from monitor.store import Store

OME = SourceRef("ome", "origin-1")

RULES = """
groups:
  - name: ingest
    rules:
      - alert: Stalled
        kind: ome.stream
        expr: present and age(last_recv) > 10
        for: 15s
        keep_firing_for: 30s
        labels: {severity: critical, team: "{{ vhost }}-ops"}
        annotations:
          summary: "No input on {{ app }}/{{ stream }} for {{ age(last_recv) | int }}s"
      - alert: Missing
        kind: ome.stream
        expr: not present
"""


def stream(name: str, last_recv: float, present: bool = True) -> Entity:
    labels = {"server": "origin-1", "vhost": "default", "app": "live", "stream": name}
    if not present:
        return Entity("ome.stream", labels, {"present": False})
    return Entity("ome.stream", labels, {"last_recv": last_recv, "bytes_in": 100.0})


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def make_engine(
    rules_file: Path, clock, store: Store | None = None, silencer: Silencer | None = None
) -> tuple[AlertEngine, list[Transition]]:
    groups = load_rule_files([str(rules_file)], kinds=ENTITY_KINDS)
    engine = AlertEngine(
        groups, store=store, silencer=silencer or Silencer(store), clock=clock, source_down_after=60
    )
    seen: list[Transition] = []
    on_snapshot, update_rules = engine.on_snapshot, engine.update_rules
    # Every transition an evaluation yields is collected, in order, as a consumer would see it.
    engine.on_snapshot = lambda snapshot: _collect(seen, on_snapshot(snapshot))  # type: ignore[method-assign]
    engine.update_rules = lambda *a, **k: _collect(seen, update_rules(*a, **k))  # type: ignore[method-assign]
    return engine, seen


def _collect(seen: list[Transition], found: list[Transition]) -> list[Transition]:
    seen.extend(found)
    return found


def snap(clock, *entities: Entity) -> Snapshot:
    return Snapshot.of(OME, clock(), entities)


def kinds(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.alertname) for t in transitions]


def test_pending_then_firing_after_for_then_keep_firing_then_resolved(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    t0 = clock()
    engine.on_snapshot(snap(clock, stream("a", t0)))
    assert seen == []
    clock.advance(11)
    engine.on_snapshot(snap(clock, stream("a", t0)))
    assert kinds(seen) == [(PENDING, "Stalled")]
    clock.advance(14)
    engine.on_snapshot(snap(clock, stream("a", t0)))
    assert kinds(seen) == [(PENDING, "Stalled")], "for: 15s has not passed yet"
    clock.advance(1)
    engine.on_snapshot(snap(clock, stream("a", t0)))
    assert kinds(seen)[-1] == (FIRING, "Stalled")
    firing = seen[-1]
    assert firing.labels["team"] == "default-ops"
    assert firing.labels["severity"] == "critical"
    assert firing.annotations["summary"] == "No input on live/a for 26s"
    # Input is back: keep_firing_for holds the alert for 30 s more.
    clock.advance(5)
    engine.on_snapshot(snap(clock, stream("a", clock())))
    clock.advance(29)
    engine.on_snapshot(snap(clock, stream("a", clock())))
    assert kinds(seen)[-1] == (FIRING, "Stalled")
    clock.advance(1)
    engine.on_snapshot(snap(clock, stream("a", clock())))
    assert kinds(seen)[-1] == ("resolved", "Stalled")
    assert seen[-1].fingerprint == firing.fingerprint
    assert seen[-1].resolved_at == clock()


def test_pending_that_clears_is_dropped_silently(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    t0 = clock()
    clock.advance(11)
    engine.on_snapshot(snap(clock, stream("a", t0)))
    clock.advance(1)
    engine.on_snapshot(snap(clock, stream("a", clock())))
    assert kinds(seen) == [(PENDING, "Stalled")]
    assert engine.active_alerts() == []


def test_for_zero_fires_at_once_and_without_keep_firing_resolves_at_once(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    assert kinds(seen) == [(FIRING, "Missing")]
    clock.advance(5)
    engine.on_snapshot(snap(clock, stream("gone", clock())))
    assert kinds(seen)[-1] == ("resolved", "Missing")


def test_vanished_entity_resolves_firing_alert(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    clock.advance(5)
    engine.on_snapshot(snap(clock))
    assert kinds(seen)[-1] == ("resolved", "Missing")


def test_down_source_freezes_alerts_and_fires_source_down(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    assert kinds(seen) == [(FIRING, "Missing")]
    failure = PollFailure("timeout", "GET /v1/vhosts: timed out")
    for _ in range(6):
        clock.advance(10)
        engine.on_snapshot(Snapshot.failed(OME, clock(), failure))
    # Nothing resolved while down, and Missing is still firing.
    assert ("resolved", "Missing") not in kinds(seen)
    assert [a.labels["alertname"] for a, _ in engine.active_alerts()] == ["Missing", SOURCE_DOWN]
    down = next(t for t in seen if t.labels["alertname"] == SOURCE_DOWN)
    assert down.kind == PENDING
    clock.advance(10)
    engine.on_snapshot(Snapshot.failed(OME, clock(), failure))
    assert kinds(seen)[-1] == (FIRING, SOURCE_DOWN)
    assert seen[-1].labels == {
        "alertname": SOURCE_DOWN,
        "kind": "ome",
        "source": "origin-1",
        "severity": "critical",
    }
    assert "timed out" in seen[-1].annotations["description"]
    clock.advance(10)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    assert kinds(seen)[-1] == ("resolved", SOURCE_DOWN)
    assert ("resolved", "Missing") not in kinds(seen)


def test_restart_restores_firing_alert_without_new_transition(rules_file, clock, tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    engine, seen = make_engine(rules_file, clock, store)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    fired = seen[-1]
    store.close()

    clock.advance(120)
    store = Store(tmp_path / "state.sqlite3")
    engine, seen = make_engine(rules_file, clock, store)
    [(alert, _)] = engine.active_alerts()
    assert (alert.state, alert.fingerprint, alert.fired_at) == (
        FIRING,
        fired.fingerprint,
        fired.fired_at,
    )
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    assert seen == [], "a restored firing alert must not fire again"
    clock.advance(1)
    engine.on_snapshot(snap(clock, stream("gone", clock())))
    assert kinds(seen) == [("resolved", "Missing")]
    store.close()


def test_api_silence_marks_transitions_and_alerts(rules_file, clock):
    silencer = Silencer(None)
    engine, seen = make_engine(rules_file, clock, silencer=silencer)
    silence = silencer.create(
        [Matcher.parse('stream=~"g.*"')], clock(), clock() + 60, "ops", "maint", clock()
    )
    engine.on_snapshot(
        snap(clock, stream("gone", 0, present=False), stream("other", 0, present=False))
    )
    by_stream = {t.labels["stream"]: t for t in seen}
    assert by_stream["gone"].silenced_by == (silence.id,)
    assert by_stream["other"].silenced_by == ()
    assert by_stream["gone"].to_state == FIRING, "a silenced alert keeps its state"
    silencer.expire(silence.id, clock())
    clock.advance(1)
    engine.on_snapshot(
        snap(clock, stream("gone", 0, present=False), stream("other", 0, present=False))
    )
    assert kinds(seen)[-1] == ("unsilenced", "Missing")


def test_maintenance_window_by_cron(rules_file, clock):
    # Every day at 02:00 UTC for one hour.
    window = MaintenanceWindow.cron(
        "nightly", [Matcher.parse('alertname="Missing"')], "0 2 * * *", 3600
    )
    day = 1_800_000_000 - 1_800_000_000 % 86400
    assert window.active(day + 2 * 3600 + 10)
    assert window.active(day + 2 * 3600 + 3599)
    assert not window.active(day + 3 * 3600)
    assert not window.active(day + 3600 * 1.99)
    silencer = Silencer(None, [window])
    clock.now = day + 2 * 3600 + 60
    engine, seen = make_engine(rules_file, clock, silencer=silencer)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    assert seen[-1].silenced_by == ("window:nightly",)


def test_bad_rule_reports_file_line_and_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "groups:\n"
        "  - name: g\n"
        "    rules:\n"
        "      - alert: Fine\n"
        "        kind: ome.stream\n"
        "        expr: present\n"
        "      - alert: Broken\n"
        "        kind: ome.stream\n"
        "        expr: ().__class__\n"
        "        fro: 5s\n"
    )
    with pytest.raises(RuleError) as caught:
        load_rule_files([str(path)], kinds=ENTITY_KINDS)
    text = "\n".join(caught.value.problems)
    assert f"{path}:10: rule 'Broken': groups[0].rules[1].fro: unknown key" in text
    path.write_text(path.read_text().replace("        fro: 5s\n", ""))
    with pytest.raises(RuleError) as caught:
        load_rule_files([str(path)], kinds=ENTITY_KINDS)
    [problem] = caught.value.problems
    assert problem.startswith(
        f"{path}:9: rule 'Broken': groups[0].rules[1].expr: invalid expression"
    )


def test_reload_carries_state_and_resolves_removed_rules(rules_file, clock):
    engine, seen = make_engine(rules_file, clock)
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    groups = load_rule_files([str(rules_file)], kinds=ENTITY_KINDS)
    engine.update_rules(groups)
    assert [a.state for a, _ in engine.active_alerts()] == [FIRING]
    engine.update_rules([])
    assert kinds(seen)[-1] == ("resolved", "Missing")
    assert engine.active_alerts() == []
    assert seen[-1].to_state == INACTIVE


def test_a_down_source_that_sends_no_more_snapshots_still_fires_on_time(rules_file, clock):
    """A source waiting out a Retry-After is not polled: the daemon's timer re-checks it."""
    engine, seen = make_engine(rules_file, clock)
    failed = Snapshot.failed(OME, clock(), PollFailure("http_5xx", "HTTP 503"))
    engine.on_snapshot(failed)
    assert kinds(seen) == [(PENDING, SOURCE_DOWN)]
    clock.advance(59)
    assert engine.recheck_down(failed) == []
    clock.advance(1)
    [fired] = engine.recheck_down(failed)
    assert (fired.kind, fired.alertname) == (FIRING, SOURCE_DOWN)
    assert engine.recheck_down(Snapshot.of(OME, clock(), [])) == [], "only failed snapshots"


def test_annotations_say_what_is_true_now(rules_file, clock):
    """Re-rendered at every evaluation: the cause changed from a timeout to a 401."""
    engine, seen = make_engine(rules_file, clock)
    timeout = PollFailure("timeout", "GET /v1/vhosts: timed out")
    for _ in range(7):
        engine.on_snapshot(Snapshot.failed(OME, clock(), timeout))
        clock.advance(10)
    assert kinds(seen)[-1] == (FIRING, SOURCE_DOWN)
    engine.on_snapshot(Snapshot.failed(OME, clock(), PollFailure("unauthorized", "HTTP 401")))
    [(alert, _)] = engine.active_alerts()
    assert alert.annotations["description"].endswith("fail: HTTP 401")


def test_resolved_alerts_stay_listed_with_their_end_for_the_retention(rules_file, clock):
    engine, _ = make_engine(rules_file, clock)
    engine.resolved_retention = 60
    engine.on_snapshot(snap(clock, stream("gone", 0, present=False)))
    clock.advance(5)
    engine.on_snapshot(snap(clock, stream("gone", clock())))
    assert engine.active_alerts() == []
    [(alert, _)] = engine.active_alerts(resolved=True)
    listed = alert.to_api(())
    assert listed["state"] == "resolved"
    assert listed["endsAt"] is not None and listed["endsAt"] > listed["startsAt"]
    clock.advance(60)
    engine.on_snapshot(snap(clock, stream("gone", clock())))
    assert engine.active_alerts(resolved=True) == [], "gone after resolved_retention"


def test_a_callback_costs_what_its_own_alerts_cost(tmp_path, clock):
    """A partial snapshot (one pushed event) checks silences for its own alerts, not for the
    thousands already firing."""
    rules = tmp_path / "events.yaml"
    rules.write_text(
        "groups:\n  - name: ev\n    rules:\n"
        "      - {alert: Event, kind: naver.event, expr: present, keep_firing_for: 1h}\n"
    )

    class CountingSilencer(Silencer):
        calls = 0

        def mutes(self, labels, now):
            CountingSilencer.calls += 1
            return super().mutes(labels, now)

    engine = AlertEngine(
        load_rule_files([str(rules)], kinds=ENTITY_KINDS),
        store=None,
        silencer=CountingSilencer(None),
        clock=clock,
    )
    naver = SourceRef("naver", "kr")

    def event(n: int) -> Entity:
        return Entity("naver.event", {"channel": "c1", "event": "PUBLISH_END", "event_id": str(n)})

    pushed = Snapshot(naver, clock(), tuple(event(n) for n in range(2000)), partial=True)
    assert len(engine.on_snapshot(pushed)) == 2000
    # The next one starts the others' keep_firing_for (they are no longer seen): a change of
    # each, saved once. The one after that touches only its own alert.
    engine.on_snapshot(Snapshot(naver, clock(), (event(4999),), partial=True))
    CountingSilencer.calls = 0
    [fired] = engine.on_snapshot(Snapshot(naver, clock(), (event(5000),), partial=True))
    assert fired.labels["event_id"] == "5000"
    assert CountingSilencer.calls <= 4
