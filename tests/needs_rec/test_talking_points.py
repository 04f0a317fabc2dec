"""needs_rec.talking_points: resonance statistics (hand-computed) and selection/rendering with reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from needs_rec.dictionaries import Dictionaries
from needs_rec.errors import ModelError
from needs_rec.talking_points import TalkingPoints, _presentations, render, resonance_stats, russian_number

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

    assert stats["min_support"] == 2 and stats["episodes"] == 5 and stats["base"] == "presented"
    # stage lead: a presented 3× (rows 1-3), positive 2×; b presented 2×, positive 1× → [hits, base]
    assert stats["stage"] == {"lead": {"a": [2, 3], "b": [1, 2]}}  # demo: support 1 < 2, left out
    # lead+ceo: a presented 2×, positive 1×; b presented once → left out; lead+cto and the empty position → out
    assert stats["stage_position"] == {"lead": {"ceo": {"a": [1, 2]}}}
    # lead+it (rows 1, 3; row 5 presented nothing): a positive both times, b once of twice
    assert stats["stage_industry"] == {"lead": {"it": {"a": [2, 2], "b": [1, 2]}}}
    json.dumps(stats)  # JSON-able, as the manifest needs


def test_positive_only_rates_count_conversations_not_presentations() -> None:
    """Without negatives every recorded presentation is a positive: the base is the conversations instead."""
    frame = pd.DataFrame({"stage": ["lead"] * 4, "position": ["ceo"] * 4, "industry": ["it"] * 4})
    positives = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], dtype=np.uint8)
    stats = resonance_stats(frame, positives, positives.astype(bool), ["a", "b"], min_support=2,
                            explicit_negatives=False)  # fmt: skip
    assert stats["base"] == "conversations"
    assert stats["stage"] == {"lead": {"a": [2, 4], "b": [1, 4]}}  # of 4 conversations, not of 2 / 1 presentations


def test_resonance_stats_checks_shapes() -> None:
    frame = pd.DataFrame({"stage": ["lead"], "position": ["ceo"], "industry": ["it"]})
    with pytest.raises(ValueError, match="presented has shape"):
        resonance_stats(frame, np.zeros((1, 2), np.uint8), np.zeros((2, 2), bool), ["a", "b"])
    with pytest.raises(ValueError, match="lacks column"):
        resonance_stats(frame.drop(columns="industry"), np.zeros((1, 2), np.uint8), np.zeros((1, 2), bool), ["a", "b"])


def _resonance(base: str = "presented") -> dict:
    return {
        "format": 2,
        "base": base,
        "stage": {"demo": {"ch_price": [30, 100], "ch_support": [36, 80], "ch_cloud": [10, 100]}},
        "stage_position": {"demo": {"ceo": {"ch_price": [9, 21]}, "cto": {"ch_price": [3, 30]}}},
        "stage_industry": {"demo": {"it": {"ch_price": [15, 30]}}},
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
    # the floor: at least two shown, from what the stage offers (ch_integration has no demo text)
    assert list(talking.select(p, cuts, "demo", min_selected=2)) == [0, 3]
    assert list(talking.select(p, np.zeros(4), "deal")) == [0, 3, 1]  # deal: default texts only


def test_render_texts_stage_then_default(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB)
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)
    cuts = np.full(4, 0.5, dtype=np.float32)
    demo = talking.render(p, [0, 1, 2], stage="demo", picked=talking.select(p, cuts, "demo", cap=1))
    assert [(t["characteristic"], t["text"]) for t in demo] == [
        ("ch_price", "Дешевле аналогов."),  # default
        ("ch_cloud", "Покажите облако."),  # the stage's own text wins over default
    ]  # ch_integration: no demo text, no default → not rendered
    lead = talking.render(p, [1, 2], stage="lead", picked=talking.select(p, cuts, "lead"))
    assert [t["text"] for t in lead] == ["Работает в облаке.", "Интегрируется со всем."]
    first = demo[0]
    assert first["name"] == "Цена" and first["product"] == "crm"
    assert first["probability"] == pytest.approx(0.9, abs=1e-4) and first["selected"] is True
    # `selected` is the selection rule's pick (here capped at 1), not the cut alone: ch_cloud passes 0.5
    assert demo[1]["probability"] > cuts[1] and demo[1]["selected"] is False
    assert [t["selected"] for t in lead] == [True, True]
    assert "selected" not in talking.render(p, [0], stage="demo")[0]  # no rule given: no flag


def test_reasons_interests_owned_product_and_resonance_back_off(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB, _resonance())
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)

    (price,) = talking.render(p, [0], stage="demo", position="ceo", industry="it", interests=["save_money", "scale"])
    assert price["reasons"] == [
        "Отвечает на интерес контакта: «Экономия»",
        "Отозвалось у 43% контактов с должностью «Директор» на этапе «Демо», когда это предлагали "
        "(из 21 презентации); в среднем на этапе — 30%",
        "Отозвалось у 50% контактов из отрасли «ИТ» на этапе «Демо», когда это предлагали "
        "(из 30 презентаций); в среднем на этапе — 30%",
    ]
    # unknown position and industry → back off to the stage figure, against the stage's average characteristic
    (support,) = talking.render(p, [3], stage="demo", position="other", interests=["speed", "scale"])
    assert support["reasons"] == [
        "Отвечает на интересы контакта: «Скорость», «Масштаб»",
        "Отозвалось у 45% контактов на этапе «Демо», когда это предлагали (из 80 презентаций); "
        "у средней характеристики этапа — 28%",
    ]
    # the last stage (retention): a product the client owns is a reason of its own; before it, it is not
    (owned,) = talking.render(p, [3], stage="deal", products_owned=["erp"])
    assert owned["reasons"] == ["Клиент уже пользуется «ERP»"]
    (early,) = talking.render(p, [3], stage="lead", products_owned=["erp"])
    assert not any("пользуется" in r for r in early["reasons"])
    # nothing known → still one sentence a manager can say
    (bare,) = talking.render(p, [1], stage="lead")
    assert len(bare["reasons"]) == 1 and bare["reasons"][0]


def test_a_rate_that_argues_against_the_pick_is_never_a_reason(tiny_dictionaries: Dictionaries) -> None:
    """cto: 10% of presentations against 30% at the stage; ch_cloud: 10% against the stage's 28% average."""
    talking = TalkingPoints(tiny_dictionaries, VOCAB, _resonance())
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)
    cuts = np.full(4, 0.5)
    for stage, position in (("demo", "cto"), ("demo", "ceo"), ("deal", "cto")):
        for point in talking.render(p, talking.select(p, cuts, stage, top_k=4), stage=stage, position=position,
                                    picked=talking.select(p, cuts, stage)):  # fmt: skip
            for reason in point["reasons"]:
                assert "10%" not in reason, (stage, position, point["characteristic"], reason)
    (cloud,) = talking.render(p, [1], stage="demo", position="cto")
    assert cloud["reasons"] == ["Модель ставит эту характеристику высоко для клиентов с похожим профилем"]


def test_positive_only_reasons_are_lifts_over_conversations(tiny_dictionaries: Dictionaries) -> None:
    talking = TalkingPoints(tiny_dictionaries, VOCAB, _resonance("conversations"))
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)
    (price,) = talking.render(p, [0], stage="demo", position="ceo", industry="it")
    assert price["reasons"] == [
        "Отозвалось в 43% разговоров на этапе «Демо» с контактами с должностью «Директор» (из 21 разговора) "
        "— в 1,4 раза чаще, чем в среднем на этапе",
        "Отозвалось в 50% разговоров на этапе «Демо» с контактами из отрасли «ИТ» (из 30 разговоров) "
        "— в 1,7 раза чаще, чем в среднем на этапе",
    ]


def test_a_positive_only_probability_is_compared_with_the_stage_rate(tiny_dictionaries: Dictionaries) -> None:
    """A positive-only CRM's probability is a share of conversations: the card reads it against the
    characteristic's own share at the stage, else the stage's average; explicit negatives need no reference."""
    talking = TalkingPoints(tiny_dictionaries, VOCAB, _resonance("conversations"))
    assert not talking.explicit_negatives
    assert talking.stage_rate("ch_price", "demo") == pytest.approx(0.3)  # 30 of 100 conversations
    assert talking.stage_rate(" CH_SUPPORT", "demo") == pytest.approx(0.45)
    mean = (0.3 + 0.45 + 0.1) / 3
    assert talking.stage_rate("ch_integration", "demo") == pytest.approx(mean)  # no cell: the stage's average
    assert talking.stage_rate("ch_price", "lead") is None  # nothing known of the stage
    assert TalkingPoints(tiny_dictionaries, VOCAB, _resonance()).explicit_negatives


@pytest.mark.parametrize(("value", "text"), [(104.7, "104,7"), (2500.0, "2\u00a0500"), (1e6, "1\u00a0000\u00a0000"),
                                             (0.25, "0,2"), (12.04, "12"), (1234.56, "1\u00a0234,6")])
def test_russian_numbers_have_a_decimal_comma_and_no_exponent(value: float, text: str) -> None:
    """«выручка 104.7 млн ₽» and «1e+06 млн ₽» were what `:g` wrote into a Russian reason."""
    assert russian_number(value) == text


def test_a_positive_only_crm_never_yields_a_100_percent_reason(tiny_dictionaries: Dictionaries) -> None:
    """The issue-12 failure: every recorded presentation is positive, so 'resonated when presented' read 100%."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"stage": rng.choice(["lead", "demo", "deal"], n), "position": rng.choice(["ceo", "cto"], n),
                          "industry": rng.choice(["it", "retail"], n)})  # fmt: skip
    positives = (rng.random((n, 4)) < [0.3, 0.1, 0.2, 0.05]).astype(np.uint8)
    stats = resonance_stats(frame, positives, positives.astype(bool), VOCAB, explicit_negatives=False)
    talking = TalkingPoints(tiny_dictionaries, VOCAB, stats)
    p = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)
    said = []
    for stage in ("lead", "demo", "deal"):
        for position in ("ceo", "cto"):
            for industry in ("it", "retail"):
                chosen = talking.select(p, np.zeros(4), stage, top_k=4)
                for point in talking.render(p, chosen, stage=stage, position=position, industry=industry):
                    said += point["reasons"]
    rates = [r for r in said if "Отозвалось" in r]
    assert rates, "the statistics should give some rate reasons"
    assert not any("100%" in r for r in rates)
    assert all("разговор" in r for r in rates)  # the base is conversations, never presentations


def test_format_1_statistics_still_render(tiny_dictionaries: Dictionaries) -> None:
    """A version exported before format 2 (cells [rate, presentations]) is read as presentations."""
    old = {"stage": {"demo": {"ch_price": [0.3, 100], "ch_support": [0.45, 80]}},
           "stage_position": {"demo": {"ceo": {"ch_price": [0.5, 40]}}}}  # fmt: skip
    talking = TalkingPoints(tiny_dictionaries, VOCAB, old)
    (price,) = talking.render(np.ones(4), [0], stage="demo", position="ceo")
    assert "Отозвалось у 50% контактов с должностью «Директор»" in price["reasons"][0]


def test_model_factors_are_phrased_from_the_dictionaries(tiny_dictionaries: Dictionaries) -> None:
    from needs_rec.fast_path import Factor

    talking = TalkingPoints(tiny_dictionaries, VOCAB)
    factors = {0: [Factor("position", "ceo", 0.2), Factor("interests", "save_money", 0.1),
                   Factor("employees", "", 0.05)]}  # fmt: skip
    (price,) = talking.render(np.ones(4), [0], stage="demo", factors=factors, numbers={"employees": 120.0})
    assert price["reasons"] == [
        "Модель: выше всего вероятность для этого контакта подняли должность «Директор», интерес «Экономия», "
        "численность 120 чел."
    ]


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
