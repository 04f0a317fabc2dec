"""Dictionaries of a made-up firm, for the scenarios of bench/quality.py (any firm's vocabularies work)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from needs_rec.errors import ConfigError
from training.sample.output import _check_output

# ---- dictionaries of a made-up firm (for the scenarios of bench/quality.py) -------------------------
_FIRM_POSITIONS = (
    "Генеральный директор", "Финансовый директор", "Главный бухгалтер", "Бухгалтер", "Коммерческий директор",
    "Директор по персоналу", "ИТ-директор", "Юрист", "Руководитель отдела закупок", "Операционный директор",
    "Руководитель отдела продаж", "Менеджер по закупкам", "Экономист", "Специалист по кадрам",
    "Системный администратор", "Директор по развитию", "Руководитель склада", "Маркетолог",
    "Руководитель проектов", "Аналитик", "Офис-менеджер", "Технический директор", "Начальник производства",
    "Специалист по охране труда",
)
_FIRM_INDUSTRIES = (
    "Оптовая торговля", "Розничная торговля", "Строительство", "Производство продуктов питания",
    "Машиностроение", "Логистика и склады", "Информационные технологии", "Медицина", "Образование",
    "Гостиницы и рестораны", "Сельское хозяйство", "Энергетика", "Недвижимость", "Финансовые услуги",
    "Металлургия", "Химическая промышленность", "Телекоммуникации", "Реклама и маркетинг", "Автосервис",
    "Фармацевтика", "Лёгкая промышленность", "Деревообработка", "Транспорт", "Консалтинг", "Добыча",
    "Жилищно-коммунальное хозяйство", "Туризм", "Спорт и фитнес", "Издательское дело", "Госсектор",
)
_FIRM_STAGE_NAMES = ("Знакомство", "Выявление потребностей", "Предложение", "Переговоры", "Договор", "Сопровождение")


def firm_dictionaries(
    directory: str | Path, *, characteristics: int = 240, stages: int = 4, seed: int = 0, offered_share: float = 0.85
) -> Path:
    """Write the dictionaries (contract §1) of a made-up firm of the given size into a new `directory`.

    For the scenarios of bench/quality.py: a firm the project has never seen, here with
    `characteristics` characteristics spread over products (≈12 each), `stages` funnel stages (the
    last one is retention), 30 industries, 24 positions, 10 need categories of 6 needs. Each
    characteristic answers 1–3 needs (mostly of its product's category) and has a talking point at
    each stage with probability `offered_share` (at least one). Deterministic by `seed`; the
    directory must not exist or be empty.
    """
    import yaml  # the dictionaries module parses YAML; writing it here keeps the generator one module

    if not 2 <= stages <= len(_FIRM_STAGE_NAMES) or characteristics < 1:
        raise ConfigError(f"firm dictionaries: stages must be 2..{len(_FIRM_STAGE_NAMES)}, characteristics >= 1")
    target = Path(directory)
    _check_output(target)
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stage_names = [*_FIRM_STAGE_NAMES[: stages - 1], _FIRM_STAGE_NAMES[-1]]
    stage_codes = [f"stage_{i + 1}" for i in range(stages)]
    n_products = max(1, round(characteristics / 12))
    categories = [
        {"code": f"cat_{g + 1}", "name": f"Направление {g + 1}",
         "needs": [{"code": f"need_{g + 1}_{n + 1}", "name": f"Потребность {g + 1}.{n + 1}"} for n in range(6)]}
        for g in range(10)
    ]  # fmt: skip
    need_codes = [[n["code"] for n in c["needs"]] for c in categories]
    home = rng.integers(0, len(categories), n_products)
    items = []
    for j in range(characteristics):
        k = j % n_products
        count = int(rng.integers(1, 4))
        own = rng.random(count) < 0.75
        needs = sorted({
            str(rng.choice(need_codes[home[k]] if mine else need_codes[int(rng.integers(0, len(categories)))]))
            for mine in own
        })  # fmt: skip
        offered = rng.random(stages) < offered_share
        offered[int(rng.integers(0, stages))] = True
        points = {code: f"Тезис о характеристике {j + 1} на этапе «{name}»."
                  for code, name, on in zip(stage_codes, stage_names, offered, strict=True) if on}  # fmt: skip
        items.append({"code": f"char_{j + 1:03d}", "name": f"Характеристика {j + 1}", "product": f"product_{k + 1}",
                      "needs": needs, "talking_points": points})  # fmt: skip

    def listed(names: Sequence[str], prefix: str) -> dict[str, object]:
        return {"items": [{"code": f"{prefix}_{i + 1}", "name": name} for i, name in enumerate(names)]}

    files = {
        "industries.yaml": listed(_FIRM_INDUSTRIES, "ind"),
        "regions.yaml": listed([f"Регион {i + 1}" for i in range(15)], "reg"),
        "positions.yaml": listed(_FIRM_POSITIONS, "pos"),
        "departments.yaml": listed([f"Отдел {i + 1}" for i in range(8)], "dep"),
        "decision_roles.yaml": listed(["Принимает решение", "Влияет", "Пользователь", "Согласует", "Инициатор"], "dr"),
        "legal_forms.yaml": listed(["ООО", "АО", "ПАО", "ИП", "ГУП", "АНО"], "lf"),
        "products.yaml": listed([f"Продукт {k + 1}" for k in range(n_products)], "product"),
        "funnel_stages.yaml": {"items": [{"code": c, "name": n} for c, n in zip(stage_codes, stage_names, strict=True)]},  # noqa: E501
        "needs.yaml": {"categories": categories},
        "characteristics.yaml": {"items": items},
    }
    for name, content in files.items():
        (target / name).write_text(yaml.safe_dump(content, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target
