"""The firm's reference dictionaries: loading, validation and checksums.

The dictionaries define every vocabulary the model knows (contract §1): the inputs' lookups and
the output vocabulary come from here, never from the codes that happen to appear in the data, so
another firm's dictionaries (other codes, other sizes) work with no code change. This is the only
module that parses YAML reference data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from needs_rec import yaml_text
from needs_rec.errors import DictionaryError, preview, shown, yaml_problem

#: Plain `items: [{code, name}]` vocabularies, file base name = attribute name.
SIMPLE_FILES: tuple[str, ...] = (
    "industries",
    "regions",
    "positions",
    "departments",
    "decision_roles",
    "legal_forms",
    "products",
    "funnel_stages",
)
NEEDS_FILE = "needs"
CHARACTERISTICS_FILE = "characteristics"
ALL_FILES: tuple[str, ...] = (*SIMPLE_FILES, NEEDS_FILE, CHARACTERISTICS_FILE)
DEFAULT_TALKING_POINT = "default"


def normalize_code(value: Any) -> str:
    """Canonical form of a code: compared after stripping whitespace and lower-casing (contract §1)."""
    return str(value).strip().lower()


@dataclass(frozen=True)
class Item:
    """One entry of a plain vocabulary (an industry, a position, a funnel stage, ...)."""

    code: str
    name: str


@dataclass(frozen=True)
class Need:
    """One need of the catalogue and the code of the category it is grouped under."""

    code: str
    name: str
    category: str


@dataclass(frozen=True)
class Characteristic:
    """A product characteristic: the model's output unit, with its talking points per stage."""

    code: str
    name: str
    product: str
    needs: tuple[str, ...]
    talking_points: Mapping[str, str]

    def talking_point(self, stage: str) -> str | None:
        """The text for `stage`, else the `default` text, else None (not offered at that stage)."""
        return self.talking_points.get(stage) or self.talking_points.get(DEFAULT_TALKING_POINT)


@dataclass(frozen=True)
class Dictionaries:
    """All reference dictionaries of one firm, validated and with normalised codes."""

    industries: tuple[Item, ...]
    regions: tuple[Item, ...]
    positions: tuple[Item, ...]
    departments: tuple[Item, ...]
    decision_roles: tuple[Item, ...]
    legal_forms: tuple[Item, ...]
    products: tuple[Item, ...]
    funnel_stages: tuple[Item, ...]
    need_categories: tuple[Item, ...]
    needs: tuple[Need, ...]
    characteristics: tuple[Characteristic, ...]
    checksums: Mapping[str, str] = field(default_factory=dict)

    def codes(self, vocabulary: str) -> list[str]:
        """Codes of one vocabulary in file order, e.g. `codes("positions")`."""
        return [item.code for item in getattr(self, vocabulary)]

    @property
    def stage_codes(self) -> list[str]:
        """Funnel stage codes in funnel order."""
        return self.codes("funnel_stages")

    @property
    def characteristic_codes(self) -> list[str]:
        """The output vocabulary: index i of the model's output is item i."""
        return self.codes("characteristics")

    def name_of(self, vocabulary: str, code: str) -> str | None:
        """Human name of `code` in `vocabulary`, None when the code is unknown."""
        for item in getattr(self, vocabulary):
            if item.code == code:
                return item.name
        return None

    def need_names(self) -> dict[str, str]:
        """Need code → need name, for rendering reasons."""
        return {need.code: need.name for need in self.needs}

    def offered(self) -> np.ndarray:
        """Boolean (stages, characteristics): whether a characteristic has a talking point at a stage.

        A characteristic with neither its stage's text nor `default` is never offered at that stage,
        so its probability there is zero by definition (contract §1).
        """
        return np.array(
            [[ch.talking_point(stage) is not None for ch in self.characteristics] for stage in self.stage_codes],
            dtype=bool,
        )

    def catalogue_links(self) -> np.ndarray:
        """Float (characteristics, products + needs + need categories): 1 where a characteristic
        belongs to that product, answers that need, or answers a need of that category.

        The firm's own catalogue, read from the dictionaries: the network's wide path goes through
        it (`needs_rec.model`), so what holds for a product or a need is learned once for all of its
        characteristics — a rare characteristic borrows from its siblings instead of from its few positives.
        """
        columns = [
            *(("product", item.code) for item in self.products),
            *(("need", need.code) for need in self.needs),
            *(("category", item.code) for item in self.need_categories),
        ]
        where = {key: i for i, key in enumerate(columns)}
        category_of = {need.code: need.category for need in self.needs}
        links = np.zeros((len(self.characteristics), len(columns)), dtype=np.float32)
        for row, ch in enumerate(self.characteristics):
            links[row, where["product", ch.product]] = 1.0
            for need in ch.needs:
                links[row, where["need", need]] = 1.0
                links[row, where["category", category_of[need]]] = 1.0
        return links

    def summary(self) -> dict[str, int]:
        """Vocabulary sizes, for reports and manifests."""
        sizes = {name: len(getattr(self, name)) for name in SIMPLE_FILES}
        sizes["need_categories"] = len(self.need_categories)
        sizes["needs"] = len(self.needs)
        sizes["characteristics"] = len(self.characteristics)
        return sizes


def load(directory: str | Path) -> Dictionaries:
    """Read and validate every dictionary file of `directory`.

    Raises DictionaryError naming the file, item and field for a missing file or key, a duplicate
    code, a reference to an unknown code or an empty vocabulary.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise DictionaryError(f"dictionaries directory {str(directory)!r} {what}")
    raw: dict[str, Any] = {}
    checksums: dict[str, str] = {}
    for name in ALL_FILES:
        path = _find_file(directory, name)
        data = path.read_bytes()
        checksums[path.name] = hashlib.sha256(data).hexdigest()
        try:
            raw[name] = yaml_text.load(data.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DictionaryError(f"{path.name}: {yaml_problem(exc)}") from exc

    simple = {name: _parse_items(f"{name}.yaml", raw[name]) for name in SIMPLE_FILES}
    categories, needs = _parse_needs(raw[NEEDS_FILE])
    characteristics = _parse_characteristics(
        raw[CHARACTERISTICS_FILE],
        products={item.code for item in simple["products"]},
        needs={need.code for need in needs},
        stages={item.code for item in simple["funnel_stages"]},
    )
    return Dictionaries(
        **simple,
        need_categories=categories,
        needs=needs,
        characteristics=characteristics,
        checksums=MappingProxyType(dict(sorted(checksums.items()))),
    )


def checksums(directory: str | Path) -> dict[str, str]:
    """SHA-256 of each dictionary file, keyed by file name, without parsing them."""
    directory = Path(directory)
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (_find_file(directory, name) for name in ALL_FILES)
    }


def _find_file(directory: Path, name: str) -> Path:
    for suffix in (".yaml", ".yml"):
        path = directory / f"{name}{suffix}"
        if path.is_file():
            return path
    raise DictionaryError(f"{name}.yaml: missing file in dictionaries directory {str(directory)!r}")


def _top_level(file: str, data: Any, key: str) -> list[Any]:
    if not isinstance(data, dict) or key not in data:
        raise DictionaryError(f"{file}: missing top-level key {key!r}")
    items = data[key]
    if items is None or (isinstance(items, list) and not items):
        raise DictionaryError(f"{file}: {key!r} is an empty vocabulary; at least one item is required")
    if not isinstance(items, list):
        raise DictionaryError(f"{file}: {key!r} must be a list of items, got {type(items).__name__}")
    return items


def _text_field(file: str, where: str, entry: Any, key: str) -> str:
    if not isinstance(entry, dict):
        raise DictionaryError(f"{file}: {where} must be a mapping with 'code' and 'name', got {shown(entry)}")
    value = entry.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DictionaryError(f"{file}: {where} is missing field {key!r}")
    if isinstance(value, (dict, list)):
        raise DictionaryError(f"{file}: {where} field {key!r} must be text, got {type(value).__name__}")
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted yes/no/on/off/true/false as booleans: `code: no` would silently become "false".
        raise DictionaryError(
            f"{file}: {where} field {key!r} was read as the YAML boolean {value}; quote it to keep it as text"
        )
    return str(value)


def _item(file: str, index: int, entry: Any, within: str = "") -> Item:
    code = normalize_code(_text_field(file, f"{within}item #{index + 1}", entry, "code"))
    name = _text_field(file, f"{within}item {code!r}", entry, "name").strip()
    return Item(code=code, name=name)


def _check_unique(file: str, codes: Sequence[str], what: str = "code") -> None:
    seen: set[str] = set()
    dupes = [c for c in codes if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
    if dupes:
        raise DictionaryError(f"{file}: duplicate {what} {preview(sorted(set(dupes)))}; codes must be unique")


def _parse_items(file: str, data: Any) -> tuple[Item, ...]:
    items = tuple(_item(file, i, entry) for i, entry in enumerate(_top_level(file, data, "items")))
    _check_unique(file, [item.code for item in items])
    return items


def _parse_needs(data: Any) -> tuple[tuple[Item, ...], tuple[Need, ...]]:
    file = "needs.yaml"
    categories: list[Item] = []
    needs: list[Need] = []
    for i, entry in enumerate(_top_level(file, data, "categories")):
        category = _item(file, i, entry)
        categories.append(category)
        members = entry.get("needs")
        if not isinstance(members, list) or not members:
            raise DictionaryError(
                f"{file}: category {category.code!r} field 'needs' must be a non-empty list of {{code, name}}"
            )
        for j, need_entry in enumerate(members):
            need = _item(file, j, need_entry, within=f"category {category.code!r} ")
            needs.append(Need(code=need.code, name=need.name, category=category.code))
    _check_unique(file, [c.code for c in categories], "category code")
    _check_unique(file, [n.code for n in needs], "need code")
    return tuple(categories), tuple(needs)


def _code_list(file: str, where: str, value: Any, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise DictionaryError(f"{file}: {where} field {field_name!r} must be a list of codes, got {shown(value)}")
    return tuple(normalize_code(v) for v in value)


def _parse_characteristics(
    data: Any, *, products: set[str], needs: set[str], stages: set[str]
) -> tuple[Characteristic, ...]:
    file = "characteristics.yaml"
    result: list[Characteristic] = []
    allowed_stages = stages | {DEFAULT_TALKING_POINT}
    for i, entry in enumerate(_top_level(file, data, "items")):
        base = _item(file, i, entry)
        where = f"item {base.code!r}"
        product = normalize_code(_text_field(file, where, entry, "product"))
        if product not in products:
            raise DictionaryError(
                f"{file}: {where} field 'product' refers to unknown product {product!r}; "
                f"allowed: codes of products.yaml ({preview(sorted(products))})"
            )
        if "needs" not in entry:  # contract §1: an item field; `needs: []` says "answers no need" explicitly
            raise DictionaryError(
                f"{file}: {where} is missing field 'needs' (a list of need codes of needs.yaml; [] for none)"
            )
        need_codes = _code_list(file, where, entry.get("needs"), "needs")
        unknown = [c for c in need_codes if c not in needs]
        if unknown:
            raise DictionaryError(
                f"{file}: {where} field 'needs' refers to unknown need code(s) {preview(unknown)}; "
                "allowed: need codes of needs.yaml"
            )
        points = entry.get("talking_points")
        if not isinstance(points, dict) or not points:
            raise DictionaryError(f"{file}: {where} is missing field 'talking_points' (a mapping stage → text)")
        talking: dict[str, str] = {}
        for stage, text in points.items():
            if isinstance(stage, bool):
                raise DictionaryError(
                    f"{file}: {where} field 'talking_points' has a key read as the YAML boolean {stage}; "
                    "quote the stage code"
                )
            stage_code = normalize_code(stage)
            if stage_code in talking:
                raise DictionaryError(
                    f"{file}: {where} field 'talking_points' has duplicate stage {stage_code!r} "
                    "(stage codes are compared after stripping and lower-casing)"
                )
            if stage_code not in allowed_stages:
                raise DictionaryError(
                    f"{file}: {where} field 'talking_points' refers to unknown stage {stage_code!r}; "
                    f"allowed: {preview(sorted(stages), limit=20)} or 'default'"
                )
            if not isinstance(text, str) or not text.strip():
                raise DictionaryError(f"{file}: {where} talking point for stage {stage_code!r} must be non-empty text")
            talking[stage_code] = text.strip()
        result.append(
            Characteristic(
                code=base.code,
                name=base.name,
                product=product,
                needs=need_codes,
                talking_points=MappingProxyType(talking),
            )
        )
    _check_unique(file, [c.code for c in result])
    return tuple(result)


def links_matrix(dictionaries: Dictionaries) -> tuple[list[str], list[list[int]]]:
    """Need codes and, per characteristic, the indices of the needs it answers (for reasons and features)."""
    need_index = {need.code: i for i, need in enumerate(dictionaries.needs)}
    return (
        [need.code for need in dictionaries.needs],
        [[need_index[c] for c in ch.needs] for ch in dictionaries.characteristics],
    )


def codes_of(items: Iterable[Item]) -> list[str]:
    """Codes of a sequence of items, in order."""
    return [item.code for item in items]
