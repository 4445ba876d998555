"""The `actions:` section: the issue's shape, the old `{dry_run, cooldown}` still accepted,
and mistakes refused."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from monitor.actions.config import ActionsConfig

SHAPE = """
dry_run: false
concurrency: 4
guard:
  cooldown: 5m
  budget: 3
  budget_window: 1h
  backoff: 30s
  backoff_max: 10m
  reset_after: 10m
  timeout: 2m
dumps: {root: /var/lib/streamwatch/dumps, max_dumps: 50, max_bytes: 10GiB}
"""


def test_the_documented_shape():
    config = ActionsConfig.model_validate(yaml.safe_load(SHAPE))
    guard = config.guard
    assert (guard.cooldown, guard.budget, guard.budget_window) == (300.0, 3, 3600.0)
    assert (guard.backoff, guard.backoff_max, guard.reset_after, guard.timeout) == (
        30.0,
        600.0,
        600.0,
        120.0,
    )
    assert config.dumps.max_bytes == 10 * 1024**3 and config.dumps.max_dumps == 50
    assert ActionsConfig() == ActionsConfig.model_validate({})


def test_the_old_shape_still_works():
    config = ActionsConfig.model_validate({"dry_run": True, "cooldown": "1m"})
    assert config.dry_run and config.guard.cooldown == 60.0
    both = ActionsConfig.model_validate({"cooldown": "1m", "guard": {"cooldown": "2m"}})
    assert both.guard.cooldown == 120.0, "the guard's own key wins"


@pytest.mark.parametrize(
    "bad",
    [
        {"guard": {"cooldown": 300}},  # a bare number
        {"guard": {"budget": 0}},
        {"guard": {"budgit": 3}},
        {"concurrency": 0},
        {"dumps": {"max_bytes": "lots"}},
    ],
)
def test_mistakes_are_refused(bad):
    with pytest.raises(ValidationError):
        ActionsConfig.model_validate(bad)


def test_a_rule_action_may_override_the_guard():
    guard = ActionsConfig().guard.merged({"budget": 2, "cooldown": 0.0, "after": 30.0})
    assert (guard.budget, guard.cooldown, guard.budget_window) == (2, 0.0, 3600.0)
