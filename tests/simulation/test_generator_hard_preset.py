"""The ``hard`` preset's sites: every one can be split and trained on, and they are hard."""

from __future__ import annotations

from fedge.models import split_bounds
from fedge.simulation import KPI_NAMES, SiteGenerator
from fedge.simulation._config import PRESETS

UES = KPI_NAMES.index("active_ues")


def test_every_hard_site_keeps_training_validation_and_test_days() -> None:
    config = PRESETS["hard"]
    sites = list(SiteGenerator(config.generator))
    train_days = []
    for s in sites:
        spd = s.steps_per_day
        val_start, test_start = split_bounds(s.steps, spd, config.val_days, config.test_days)
        assert s.steps - test_start == config.test_days * spd
        train_days.append(val_start // spd)
    assert min(train_days) == 2  # the newest cells: two training days only
    assert max(train_days) >= 12
    busy = [float(s.values[:, UES].mean()) for s in sites]
    assert max(busy) / min(busy) > 30  # scales orders of magnitude apart
    assert sum(bool(s.events is not None and s.events.any()) for s in sites) >= 6
    assert any((s.values[:, UES] == 0).mean() > 0.1 for s in sites)  # cells asleep at night
