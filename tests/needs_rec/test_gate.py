"""needs_rec.gate: the gate file's validation, the held-out window, and each check on hand-made scores."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from needs_rec import gate
from needs_rec.errors import ConfigError, DataError


def test_defaults_and_a_partial_file(tmp_path: Path) -> None:
    defaults = gate.load_gate()
    assert defaults.min_ndcg_vs_champion == 0.98 and defaults.window.share == 0.15 and defaults.window.weeks is None
    (tmp_path / "g.yaml").write_text("window: {weeks: 6}\nmax_stage_drop: 0.1\n", encoding="utf-8")
    custom = gate.load_gate(tmp_path / "g.yaml")
    assert custom.window.weeks == 6 and custom.max_stage_drop == 0.1 and custom.min_window_episodes == 200


@pytest.mark.parametrize(("text", "message"), [
    ("min_window_episodes: 2.5\n", "gate key 'min_window_episodes' must be an integer"),
    ("window: {weeks: 0}\n", "gate key 'window.weeks' must be an integer in [1, 520]"),
    ("window: 3\n", "gate key 'window' must be a mapping"),
    ("windw: {weeks: 3}\n", "unknown gate key 'windw'"),
    ("- a list\n", "must hold a mapping"),
    # PyYAML keeps the last of two equal keys: the first line was dropped without a word
    ("min_window_episodes: 5\nmin_window_episodes: 500\n",
     "line 2, column 1: duplicate key 'min_window_episodes' (first given on line 1)"),
])
def test_every_key_is_validated_and_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "g.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        gate.load_gate(tmp_path / "g.yaml")
    assert "g.yaml" in str(caught.value)


def test_window_by_share_and_by_weeks() -> None:
    days = np.array(["2025-01-01"] * 10 + ["2025-02-01"] * 10 + ["2025-03-01"] * 5 + ["2025-03-20"] * 5,
                    dtype="datetime64[D]")
    assert gate.window_start(days, gate.WindowConfig(share=0.33)) == np.datetime64("2025-03-01")
    assert gate.window_start(days, gate.WindowConfig(share=0.15)) == np.datetime64("2025-03-20")
    assert gate.window_start(days, gate.WindowConfig(weeks=3)) == np.datetime64("2025-03-01")
    with pytest.raises(DataError, match="leaves 1 distinct date"):
        gate.window_start(days, gate.WindowConfig(weeks=8))


def scores(ndcg: float, stages: dict[str, tuple[float, int]], calibration: float = 0.05) -> gate.Scores:
    return gate.Scores(ndcg=ndcg, stages=stages, calibration_error=calibration)


def test_each_check_passes_and_fails_on_its_own_figure() -> None:
    rules = gate.GateConfig()
    champion = scores(0.40, {"lead": (0.40, 100), "deal": (0.50, 100), "rare": (0.9, 5)})
    popularity = scores(0.30, {})
    good = scores(0.41, {"lead": (0.40, 100), "deal": (0.49, 100), "rare": (0.1, 5)})
    checks = gate.decide(rules, window_episodes=300, challenger=good, champion=champion, popularity=popularity)
    assert all(c.passed for c in checks), [c.text for c in checks]  # the tiny 'rare' stage is not compared
    failing = {
        "min_window_episodes": dict(window_episodes=10, challenger=good),
        "min_ndcg_vs_champion": dict(window_episodes=300, challenger=scores(0.38, good.stages)),
        "max_stage_drop": dict(window_episodes=300, challenger=scores(0.41, {**good.stages, "deal": (0.45, 100)})),
        "max_calibration_error": dict(window_episodes=300, challenger=scores(0.41, good.stages, calibration=0.3)),
        "min_ndcg_vs_popularity": dict(window_episodes=300, challenger=scores(0.41, good.stages)),
    }
    for key, kwargs in failing.items():
        base = popularity if key != "min_ndcg_vs_popularity" else scores(0.405, {})
        checks = gate.decide(rules, champion=champion, popularity=base, **kwargs)
        assert [c.key for c in checks if not c.passed] == [key]
    first = gate.decide(rules, window_episodes=300, challenger=good, champion=None, popularity=popularity)
    assert [c.key for c in first] == ["min_window_episodes", "max_calibration_error", "min_ndcg_vs_popularity"]


def test_popularity_is_masked_by_the_stage_offer() -> None:
    y = np.array([[1, 0, 1], [1, 1, 0]])
    offered = np.array([[True, True, False]])
    assert gate.popularity(y, 1, offered).tolist() == [[1.0, 0.5, 0.0]]
