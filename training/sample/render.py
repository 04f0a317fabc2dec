"""Rendering: the process's draws as text, the way a CRM export writes them (messy codes, missing
values, fake personal data), and the oracle's frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from needs_rec.dictionaries import Dictionaries, normalize_code
from needs_rec.schema import MULTI_SEPARATOR, NEGATIVE, POSITIVE
from training.sample.process import (
    _PROSPECT,
    MESSY_CODE_RATE,
    MISSING_RATE,
    START,
    WINDOW_DAYS,
    _Episodes,
    _Outcomes,
    _Population,
    _Vocab,
)

# ---- rendering: text as a CRM export writes it ------------------------------------------------------
# fmt: off
_SURNAMES = (
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков", "Фёдоров",
    "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов", "Степанов", "Николаев",
    "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев",
    "Романов", "Воробьёв", "Сергеев", "Кузьмин", "Фролов", "Александров", "Дмитриев", "Королёв", "Гусев", "Киселёв",
    "Ильин", "Максимов", "Поляков", "Сорокин", "Виноградов", "Ковалёв", "Белов", "Медведев", "Антонов", "Тарасов",
)  # male forms; the female form adds "а"
_MALE = (
    "Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл", "Михаил", "Никита",
    "Матвей", "Роман", "Егор", "Арсений", "Иван", "Денис", "Евгений", "Тимур", "Владимир", "Павел", "Олег", "Игорь",
    "Виктор", "Юрий", "Константин", "Григорий",
)
_FEMALE = (
    "Анна", "Мария", "Елена", "Ольга", "Наталья", "Екатерина", "Татьяна", "Ирина", "Светлана", "Юлия", "Анастасия",
    "Дарья", "Марина", "Ксения", "Алина", "Виктория", "Полина", "Валерия", "Евгения", "Людмила", "Галина", "Вера",
)
_PATRONYMIC_ROOTS = (
    "Александров", "Дмитриев", "Сергеев", "Андреев", "Алексеев", "Михайлов", "Иванов", "Владимиров", "Павлов",
    "Олегов", "Игорев", "Викторов", "Юрьев", "Николаев", "Евгеньев", "Петров", "Борисов", "Константинов",
)  # + "ич" (male) or "на" (female)
_ORG_CORES = (
    "Вектор", "Альфа", "Гранит", "Меридиан", "Импульс", "Горизонт", "Прогресс", "Ресурс", "Сфера", "Альянс",
    "Стандарт", "Партнёр", "Эталон", "Феникс", "Орион", "Атлант", "Форвард", "Квант", "Циркон", "Магистраль",
    "Интеграл", "Контур", "Старт", "Основа", "Потенциал", "Лидер",
)
# fmt: on
_ORG_PREFIXES = ("", "", "", "Урал", "Сиб", "Волга", "Нева", "Дон", "Балт", "Тех", "Агро", "Пром", "Строй")
_ORG_SUFFIXES = ("", "", "", " Плюс", " Групп", "-Сервис", " Трейд", "-М", " Инвест", " Логистик", " Холдинг")
_FREE_MAIL = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "list.ru", "inbox.ru")
_TRANSLIT = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
        "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
        "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y",
        "ь": "", "э": "e", "ю": "yu", "я": "ya", " ": "", "-": "",
    }
)  # fmt: skip


def _translit(text: str) -> str:
    return text.lower().translate(_TRANSLIT)


def _variants(codes: Sequence[str]) -> np.ndarray:
    """(len, 5) spellings of each code: as is, UPPER, Title, ' padded ', 'trailing '; all normalise back."""
    table = np.empty((len(codes), 5), dtype=object)
    for i, code in enumerate(codes):
        for j, spelled in enumerate((code, code.upper(), code.title(), f" {code} ", f"{code} ")):
            table[i, j] = spelled if normalize_code(spelled) == code else code
    return table


def _messy(codes: Sequence[str], index: np.ndarray, rng: np.random.Generator, missing: int = -1) -> np.ndarray:
    """Text of each code index (odd case or spaces at MESSY_CODE_RATE); `missing` index → empty cell."""
    table = _variants(codes)
    if table.size == 0:
        return np.full(index.shape, "", dtype=object)
    variant = np.where(rng.random(index.shape) < MESSY_CODE_RATE, rng.integers(1, 5, index.shape), 0)
    text = table[np.clip(index, 0, len(codes) - 1), variant]
    return np.where(index == missing, "", text)


def _joined(codes: Sequence[str], slots: np.ndarray, rng: np.random.Generator) -> list[str]:
    """`;`-joined messy text of each row of code indices (len(codes) = empty slot)."""
    text = _messy(codes, slots, rng, missing=len(codes))
    return [MULTI_SEPARATOR.join(t for t in row if t) for row in text]


def _inn(n: int, personal: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Fake taxpayer numbers with valid check digits: 12 digits for individuals, 10 for companies."""
    digits = rng.integers(0, 10, (n, 12))
    digits[:, 0] = rng.integers(1, 10, n)
    w10 = np.array([2, 4, 10, 3, 5, 9, 4, 6, 8])
    w11 = np.array([7, 2, 4, 10, 3, 5, 9, 4, 6, 8])
    w12 = np.array([3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8])
    company = digits.copy()
    company[:, 9] = (company[:, :9] @ w10) % 11 % 10
    person = digits.copy()
    person[:, 10] = (person[:, :10] @ w11) % 11 % 10
    person[:, 11] = (person[:, :11] @ w12) % 11 % 10
    return ["".join(map(str, p)) if is_person else "".join(map(str, c[:10]))
            for c, p, is_person in zip(company.tolist(), person.tolist(), personal.tolist(), strict=True)]  # fmt: skip


def _people(n: int, rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
    """Fake (surname, first name, patronymic) triples, male or female."""
    female = rng.random(n) < 0.45
    surname = rng.integers(0, len(_SURNAMES), n)
    first_m = rng.integers(0, len(_MALE), n)
    first_f = rng.integers(0, len(_FEMALE), n)
    root = rng.integers(0, len(_PATRONYMIC_ROOTS), n)
    surnames, firsts, patronymics = [], [], []
    for is_f, s, fm, ff, r in zip(female.tolist(), surname.tolist(), first_m.tolist(), first_f.tolist(),
                                  root.tolist(), strict=True):  # fmt: skip
        surnames.append(_SURNAMES[s] + ("а" if is_f else ""))
        firsts.append(_FEMALE[ff] if is_f else _MALE[fm])
        patronymics.append(_PATRONYMIC_ROOTS[r] + ("на" if is_f else "ич"))
    return surnames, firsts, patronymics


def _day_text(day: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(START + day, unit="D").astype(object)


def _render_organizations(
    d: Dictionaries, v: _Vocab, pop: _Population, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[str]]:
    """The organizations table, and each organization's e-mail domain (for its contacts)."""
    n = len(pop.org_entry)
    width = max(4, len(str(n)))
    legal_names = [item.name for item in d.legal_forms]
    core = rng.integers(0, len(_ORG_CORES), n).tolist()
    prefix = rng.integers(0, len(_ORG_PREFIXES), n).tolist()
    suffix = rng.integers(0, len(_ORG_SUFFIXES), n).tolist()
    ascii_quotes = (rng.random(n) < 0.5).tolist()
    owners, owner_first, owner_middle = _people(n, rng)
    names, domains = [], []
    for i, (legal, micro) in enumerate(zip(pop.org_legal.tolist(), pop.org_micro.tolist(), strict=True)):
        form = legal_names[legal] + " " if legal >= 0 else ""
        if micro:
            names.append(f"{form}{owners[i]} {owner_first[i][0]}. {owner_middle[i][0]}.")
            domains.append("")
            continue
        title = _ORG_PREFIXES[prefix[i]] + _ORG_CORES[core[i]] + _ORG_SUFFIXES[suffix[i]]
        names.append(f'{form}"{title}"' if ascii_quotes[i] else f"{form}«{title}»")
        domains.append(_translit(title) + ".ru")
    products = np.where(pop.org_owned, np.arange(len(v.products))[None, :], len(v.products))
    prospect = pop.org_client_since == _PROSPECT
    columns = {
        "org_id": [f"ORG-{i + 1:0{width}d}" for i in range(n)],
        "name": names,
        "inn": _inn(n, pop.org_micro, rng),
        "industry": _messy(v.industries, pop.org_industry, rng),
        "region": _messy(v.regions, pop.org_region, rng, missing=len(v.regions)),
        "employees": ["" if np.isnan(e) else str(int(e)) for e in pop.org_employees.tolist()],
        "revenue_mln": ["" if np.isnan(r) else f"{r:.1f}" for r in pop.org_revenue.tolist()],
        "legal_form": _messy(v.legal_forms, pop.org_legal, rng),
        "founded_year": ["" if y < 0 else str(y) for y in pop.org_founded.tolist()],
        "client_since": np.where(prospect, "", _day_text(np.where(prospect, 0, pop.org_client_since))),
        "products_owned": _joined(v.products, products, rng),
    }
    return _frame(columns), domains


def _render_contacts(
    v: _Vocab, pop: _Population, org_ids: np.ndarray, org_domains: list[str], rng: np.random.Generator
) -> pd.DataFrame:
    n = len(pop.contact_org)
    surnames, firsts, patronymics = _people(n, rng)
    no_patronymic = (rng.random(n) < 0.05).tolist()
    full_names = [f"{s} {f}" if skip else f"{s} {f} {p}"
                  for s, f, p, skip in zip(surnames, firsts, patronymics, no_patronymic, strict=True)]  # fmt: skip
    free = (rng.random(n) < 0.3).tolist()
    free_domain = rng.integers(0, len(_FREE_MAIL), n).tolist()
    style = rng.integers(0, 3, n).tolist()
    emails = []
    for i, org in enumerate(pop.contact_org.tolist()):
        first, last = _translit(firsts[i]), _translit(surnames[i])
        local = (f"{first[0]}.{last}", f"{last}.{first}", f"{first}{last[0]}")[style[i]]
        domain = org_domains[org] if org_domains[org] and not free[i] else _FREE_MAIL[free_domain[i]]
        emails.append(f"{local}@{domain}")
    digits = rng.integers(0, 10, (n, 9)).astype(str).tolist()
    formats = rng.integers(0, 4, n).tolist()
    phones = []
    for row, fmt in zip(digits, formats, strict=True):
        a, b, c, d = "".join(row[:2]), "".join(row[2:5]), "".join(row[5:7]), "".join(row[7:])
        phones.append((f"+7 (9{a}) {b}-{c}-{d}", f"8 9{a} {b} {c} {d}", f"+79{a}{b}{c}{d}", f"8(9{a}){b}{c}{d}")[fmt])
    columns = {
        "contact_id": _contact_ids(n).to_numpy(zero_copy_only=False),
        "org_id": org_ids[pop.contact_org],
        "full_name": full_names,
        "position": _messy(v.positions, pop.contact_position, rng),
        "department": _messy(v.departments, pop.contact_department, rng),
        "decision_role": _messy(v.decision_roles, pop.contact_role, rng),
        "interests": _joined(v.needs, pop.contact_interests, rng),
        "email": np.where(rng.random(n) < MISSING_RATE["email"], "", np.array(emails, dtype=object)),
        "phone": np.where(rng.random(n) < MISSING_RATE["phone"], "", np.array(phones, dtype=object)),
    }
    return _frame(columns)


def _contact_ids(n: int) -> pa.Array:
    width = max(4, len(str(n)))
    return pa.array([f"C-{i + 1:0{width}d}" for i in range(n)], type=pa.string())


def _render_outcomes(
    v: _Vocab, pop: _Population, ep: _Episodes, out: _Outcomes, rng: np.random.Generator
) -> pd.DataFrame:
    days = np.arange(WINDOW_DAYS)
    stage_text = _messy(v.stages, ep.stage[out.episode], rng)
    char_text = _messy(v.chars, out.char, rng)
    table = pa.table(
        {
            "contact_id": _contact_ids(len(pop.contact_org)).take(pa.array(ep.contact[out.episode])),
            "occurred_on": pa.array(_day_text(days), type=pa.string()).take(pa.array(ep.day[out.episode])),
            "stage": pa.array(stage_text, type=pa.string()),
            "characteristic": pa.array(char_text, type=pa.string()),
            "outcome": pa.array([NEGATIVE, POSITIVE], type=pa.string()).take(pa.array(out.positive.astype(np.int8))),
            "manager_id": _manager_ids(pop).take(pa.array(pop.contact_org[ep.contact[out.episode]])),
        }
    )
    return table.to_pandas()


def _manager_ids(pop: _Population) -> pa.Array:
    """Each organization's account manager (v2 `manager_id`, an opaque code): about one per 40
    organizations, spread over them by a fixed scramble so no random draw of the rest changes."""
    n_orgs = int(pop.contact_org.max(initial=0)) + 1
    n_managers = max(3, -(-n_orgs // 40))
    width = max(2, len(str(n_managers)))
    codes = np.array([f"M-{i + 1:0{width}d}" for i in range(n_managers)], dtype=object)
    return pa.array(codes[(np.arange(n_orgs) * 7919) % n_managers], type=pa.string())


def _render_oracle(v: _Vocab, pop: _Population, ep: _Episodes, oracle: np.ndarray) -> pd.DataFrame:
    keys = pa.table(
        {
            "contact_id": _contact_ids(len(pop.contact_org)).take(pa.array(ep.contact)),
            "occurred_on": pa.array(_day_text(np.arange(WINDOW_DAYS)), type=pa.string()).take(pa.array(ep.day)),
            "stage": pa.array(v.stages, type=pa.string()).take(pa.array(ep.stage)),
        }
    ).to_pandas()
    probabilities = pd.DataFrame(oracle, columns=pd.Index(v.chars), copy=False)
    return pd.concat([keys, probabilities], axis=1)


def _frame(columns: Mapping[str, object]) -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.array(np.asarray(values, dtype=object), dtype="str") for name, values in columns.items()}
    )
