"""needs_rec.talking_points: resonance statistics (hand-computed) and selection/rendering with reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from needs_rec.dictionaries import Dictionaries
from needs_rec.errors import ModelError
from needs_rec.talking_points import TalkingPoints, _presentations, render, resonance_stats

# tiny dictionaries (tests/crm_factory.py): stages lead, demo, deal; characteristics in order
# ch_price (crm, needs save_money; default text), ch_cloud (crm, speed; demo text + default),
# ch_integration (erp, scale; lead text only), ch_support (erp, speed + scale; default text).
VOCAB = ["ch_price", "ch_cloud", "ch_integration", "ch_support"]


def test_resonance_stats_hand_computed() -> None:
    frame = pd.DataFrame(
        {
            "stage": ["lead", "lead", "LEAD ", "demo", "lead"],
            "position": ["ceo", "ceo", "cto", "ceo", ""],
            "industry": ["it", "retail", "it", "it", "it"],
        }
    )
    presented = np.array([[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]], dtype=bool)
    positives = np.array([[1, 0], [0, 0], [1, 1], [1, 0], [1, 1]], dtype=np.uint8)  # row 5: positive, not presented
    stats = resonance_stats(frame, positives, presented, ["a", "b"], min_support=2)

    assert stats["min_support"] == 2 and stats["episodes"] == 5
    # stage lead: a presented 3× (rows 1-3), positive 2× → 0.6667; b presented 2×, positive 1× → 0.5
    assert stats["stage"] == {"lead": {"a": [0.6667, 3], "b": [0.5, 2]}}  # demo: support 1 < 2, left out
    # lead+ceo: a presented 2×, positive 1×; b presented once → left out; lead+cto and the empty position → out
    assert stats["stage_position"] == {"lead": {"ceo": {"a": [0.5, 2]}}}
    # lead+it (rows 1, 3; row 5 presented nothing): a positive both times, b once of twice
    assert stats["stage_industry"] == {"lead": {"it": {"a": [1.0, 2], "b": [0.5, 2]}}}
    json.dumps(stats)  # JSON-able, as the manifest needs


def test_resonance_stats_checks_shapes() -> None:
    frame = pd.DataFrame({"stage": ["lead"], "position": ["ceo"], "industry": ["it"]})
    with pytest.raises(ValueError, match="presented has shape"):
        resonance_stats(frame, np.zeros((1, 2), np.uint8), np.zeros((2, 2), bool), ["a", "b"])
    with pytest.raises(ValueError, match="lacks column"):
        resonance_stats(frame.drop(columns="industry"), np.zeros((1, 2), np.uint8), np.zeros((1, 2), bool), ["a", "b"])


def _resonance() -> dict:
    return {
        "stage": {"demo": {"ch_price": [0.3, 100], "ch_support": [0.25, 80]}},
        "stage_position": {"demo": {"ceo": {"ch_price": [0.42, 21]}}},
        "stage_industry": {"demo": {"it": {"ch_price": [0.5, 30]}}},
    }


def test_select_skips_characteristics_not_offered_at_the_stage(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB)
    p = np.array([0.9, 0.2, 0.7, 0.4], dtype=np.float32)
    cuts = np.full(4, 0.5, dtype=np.float32)
    assert list(talking.select(p, cuts, "lead")) == [0, 2]  # ch_integration has a lead text
    assert list(talking.select(p, cuts, "demo")) == [0]  # ... but none at demo: skipped though 0.7 ≥ 0.5
    assert list(talking.select(p, cuts, "demo", top_k=3)) == [0, 3, 1]  # top_k: most probable offered ones
    assert list(talking.select(p, cuts, "lead", top_k=1)) == [0]
    assert list(talking.select(p, cuts, "lead", cap=1)) == [0]  # the manifest's cap after the cut
    assert list(talking.select(p, np.zeros(4), "deal")) == [0, 3, 1]  # deal: default texts only


def test_render_texts_stage_then_default(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB)
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)
    cuts = np.full(4, 0.5, dtype=np.float32)
    demo = talking.render(p, [0, 1, 2], stage="demo", thresholds=cuts)
    assert [(t["characteristic"], t["text"]) for t in demo] == [
        ("ch_price", "Дешевле аналогов."),  # default
        ("ch_cloud", "Покажите облако."),  # the stage's own text wins over default
    ]  # ch_integration: no demo text, no default → not rendered
    lead = talking.render(p, [1, 2], stage="lead", thresholds=cuts)
    assert [t["text"] for t in lead] == ["Работает в облаке.", "Интегрируется со всем."]
    first = demo[0]
    assert first["name"] == "Цена" and first["product"] == "crm"
    assert first["probability"] == pytest.approx(0.9, abs=1e-4) and first["selected"] is True


def test_reasons_interests_owned_product_and_resonance_back_off(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB, _resonance())
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)

    (price,) = talking.render(p, [0], stage="demo", position="ceo", industry="it", interests=["save_money", "scale"])
    assert price["reasons"] == [
        "Отвечает на интерес контакта: «Экономия»",
        "Отозвалось у 42% контактов с должностью «Директор» на этапе «Демо» (из 21 презентации)",
        "Отозвалось у 50% контактов из отрасли «ИТ» на этапе «Демо» (из 30 презентаций)",
    ]
    # unknown position and industry → back off to the stage figure
    (support,) = talking.render(p, [3], stage="demo", position="cto", interests=["speed", "scale"])
    assert support["reasons"] == [
        "Отвечает на интересы контакта: «Скорость», «Масштаб»",
        "Отозвалось у 25% контактов на этапе «Демо» (из 80 презентаций)",
    ]
    # the last stage (retention): a product the client owns is a reason of its own
    (owned,) = talking.render(p, [3], stage="deal", products_owned=["erp"])
    assert owned["reasons"] == ["Клиент уже пользуется «ERP»"]
    # nothing known → still one sentence a manager can say
    (bare,) = talking.render(p, [1], stage="lead")
    assert len(bare["reasons"]) == 1 and bare["reasons"][0]


def test_module_render_orders_by_probability(tiny_dictionaries: Dictionaries) -> None:
    p = np.array([0.55, 0.6, 0.7, 0.95], dtype=np.float32)
    points = render(p, np.full(4, 0.5), stage="deal", dictionaries=tiny_dictionaries, vocabulary=VOCAB)
    assert [t["characteristic"] for t in points] == ["ch_support", "ch_cloud", "ch_price"]


def test_vocabulary_must_match_dictionaries(tiny_dictionaries: Dictionaries) -> None:
    with pytest.raises(ModelError, match="ch_unknown"):
        TalkingPoints(tiny_dictionaries, [*VOCAB, "ch_unknown"])


@pytest.mark.parametrize(("n", "text"), [(20, "из 20 презентаций"), (21, "из 21 презентации"),
                                         (111, "из 111 презентаций"), (101, "из 101 презентации")])
def test_presentations_genitive(n: int, text: str) -> None:
    assert _presentations(n) == text
