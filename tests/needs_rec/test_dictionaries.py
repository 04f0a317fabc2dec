"""Reference dictionaries: the firm's real ones, a second firm's, and every load error of contract §1."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from needs_rec import dictionaries
from needs_rec.dictionaries import Characteristic, Dictionaries, load, normalize_code
from needs_rec.errors import DictionaryError

ROOT = Path(__file__).resolve().parents[2]
REPO_DICTIONARIES = ROOT / "dictionaries"
OTHER_FIRM = ROOT / "tests" / "fixtures" / "other_firm"

REPO_STAGES = ["first_contact", "needs_analysis", "proposal", "contract", "retention"]
FILE_NAMES = [f"{name}.yaml" for name in dictionaries.ALL_FILES]
CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
CYRILLIC = re.compile(r"[А-Яа-яЁё]")


@pytest.fixture(scope="module")
def repo() -> Dictionaries:
    return load(REPO_DICTIONARIES)


@pytest.fixture(scope="module")
def other() -> Dictionaries:
    return load(OTHER_FIRM)


# ---------------------------------------------------------------- the firm's own dictionaries


def test_repo_dictionaries_meet_the_required_sizes(repo: Dictionaries) -> None:
    sizes = repo.summary()
    assert sizes["need_categories"] >= 8
    assert sizes["needs"] >= 40
    assert sizes["products"] >= 10
    assert sizes["characteristics"] >= 60
    assert sizes["positions"] >= 15
    assert sizes["industries"] == 21  # OKVED 2 sections A–U
    assert 18 <= sizes["regions"] <= 30
    assert sizes["departments"] >= 8
    assert sizes["decision_roles"] >= 6
    assert sizes["legal_forms"] >= 10
    for category in repo.need_categories:
        assert sum(need.category == category.code for need in repo.needs) >= 3, category.code


def test_repo_funnel_stages_are_the_five_contract_codes_in_funnel_order(repo: Dictionaries) -> None:
    assert repo.stage_codes == REPO_STAGES


def test_repo_positions_include_the_key_contacts(repo: Dictionaries) -> None:
    codes = set(repo.codes("positions"))
    assert {"ceo", "cfo", "chief_accountant", "hr_director", "legal_counsel", "contract_manager", "dpo"} <= codes


def test_repo_codes_are_short_ascii_snake_case_and_names_are_russian(repo: Dictionaries) -> None:
    vocabularies = [*dictionaries.SIMPLE_FILES, "need_categories", "needs", "characteristics"]
    for vocabulary in vocabularies:
        for item in getattr(repo, vocabulary):
            assert CODE_PATTERN.fullmatch(item.code), (vocabulary, item.code)
            assert len(item.code) <= 40, (vocabulary, item.code)
            assert CYRILLIC.search(item.name), (vocabulary, item.code, item.name)


def test_repo_files_start_with_a_comment_and_are_utf8() -> None:
    for name in FILE_NAMES:
        text = (REPO_DICTIONARIES / name).read_text(encoding="utf-8")
        assert text.startswith("# "), name


def test_every_repo_characteristic_has_a_distinct_text_for_every_stage(repo: Dictionaries) -> None:
    all_texts: list[str] = []
    for ch in repo.characteristics:
        assert set(ch.talking_points) == {*REPO_STAGES, "default"}, ch.code
        texts = [ch.talking_points[stage] for stage in [*REPO_STAGES, "default"]]
        assert len(set(texts)) == len(texts), f"{ch.code}: talking points repeat"
        for stage in REPO_STAGES:
            text = ch.talking_point(stage)
            assert text is not None and text != ch.talking_points["default"], (ch.code, stage)
            assert len(text) >= 40, (ch.code, stage)  # a real sentence, not a label
            assert text.strip() != ch.name, (ch.code, stage)
        all_texts.extend(texts)
    duplicated = [text for text, n in Counter(all_texts).items() if n > 1]
    assert not duplicated, f"talking points shared between characteristics: {duplicated[:3]}"


def test_needs_analysis_talking_points_ask_a_question(repo: Dictionaries) -> None:
    without_question = [ch.code for ch in repo.characteristics if "?" not in ch.talking_points["needs_analysis"]]
    assert not without_question


def test_every_repo_product_has_four_to_eight_characteristics(repo: Dictionaries) -> None:
    per_product = Counter(ch.product for ch in repo.characteristics)
    assert set(per_product) == set(repo.codes("products"))
    for product, count in per_product.items():
        assert 4 <= count <= 8, (product, count)


def test_repo_characteristics_answer_one_to_four_known_needs_and_cover_the_catalogue(repo: Dictionaries) -> None:
    need_codes = set(repo.codes("needs"))
    for ch in repo.characteristics:
        assert 1 <= len(ch.needs) <= 4, ch.code
        assert len(set(ch.needs)) == len(ch.needs), ch.code
        assert set(ch.needs) <= need_codes, ch.code
    answered = {code for ch in repo.characteristics for code in ch.needs}
    assert answered == need_codes


def test_links_matrix_maps_back_to_the_need_codes(repo: Dictionaries) -> None:
    need_codes, links = dictionaries.links_matrix(repo)
    assert need_codes == repo.codes("needs")
    assert len(links) == len(repo.characteristics)
    for ch, indices in zip(repo.characteristics, links, strict=True):
        assert [need_codes[i] for i in indices] == list(ch.needs)


def test_catalogue_links_name_each_characteristics_product_needs_and_their_categories(repo: Dictionaries) -> None:
    links = repo.catalogue_links()
    products, needs = repo.codes("products"), repo.codes("needs")
    categories = repo.codes("need_categories")
    assert links.shape == (len(repo.characteristics), len(products) + len(needs) + len(categories))
    category_of = {need.code: need.category for need in repo.needs}
    for ch, row in zip(repo.characteristics, links, strict=True):
        linked = np.flatnonzero(row)
        assert [products[i] for i in linked if i < len(products)] == [ch.product]
        assert {needs[i - len(products)] for i in linked if len(products) <= i < len(products) + len(needs)} == set(
            ch.needs
        )
        assert {categories[i - len(products) - len(needs)] for i in linked if i >= len(products) + len(needs)} == {
            category_of[n] for n in ch.needs
        }
    assert set(np.unique(links)) == {0.0, 1.0}


# ---------------------------------------------------------------- a second, different firm


def test_other_firm_dictionaries_load_with_their_own_sizes(other: Dictionaries) -> None:
    assert other.stage_codes == ["lead", "qualify", "offer", "renewal"]
    sizes = other.summary()
    assert sizes["characteristics"] == 30
    assert sizes["products"] == 6
    assert sizes["need_categories"] == 5
    assert sizes["positions"] < 15


def test_other_firm_shares_no_vocabulary_with_the_repo(repo: Dictionaries, other: Dictionaries) -> None:
    for vocabulary in ("funnel_stages", "products", "needs", "characteristics", "positions", "industries"):
        assert not set(repo.codes(vocabulary)) & set(other.codes(vocabulary)), vocabulary


def test_other_firm_offers_some_characteristics_only_at_some_stages(other: Dictionaries) -> None:
    by_code = {ch.code: ch for ch in other.characteristics}
    only_default = by_code["finops_review"]
    assert set(only_default.talking_points) == {"default"}
    assert all(
        only_default.talking_point(stage) == only_default.talking_points["default"] for stage in other.stage_codes
    )

    no_default = by_code["landing_zone"]
    assert no_default.talking_point("lead") is None
    assert no_default.talking_point("renewal") is None
    assert no_default.talking_point("offer") == no_default.talking_points["offer"]

    for stage in other.stage_codes:
        offered = [ch for ch in other.characteristics if ch.talking_point(stage) is not None]
        assert 0 < len(offered) < len(other.characteristics), stage


# ---------------------------------------------------------------- talking point fallback


def test_talking_point_prefers_the_stage_then_default_then_none() -> None:
    ch = Characteristic(
        code="x", name="X", product="p", needs=(), talking_points={"offer": "stage text", "default": "fallback"}
    )
    assert ch.talking_point("offer") == "stage text"
    assert ch.talking_point("lead") == "fallback"
    bare = Characteristic(code="y", name="Y", product="p", needs=(), talking_points={"offer": "only here"})
    assert bare.talking_point("offer") == "only here"
    assert bare.talking_point("lead") is None


# ---------------------------------------------------------------- small generated dictionaries


def minimal() -> dict[str, Any]:
    """A valid, tiny dictionary set: file base name → YAML content."""
    simple = {name: {"items": [{"code": f"{name}_a", "name": f"{name} A"}]} for name in dictionaries.SIMPLE_FILES}
    simple["products"] = {"items": [{"code": "tax", "name": "Tax"}, {"code": "law", "name": "Law"}]}
    simple["funnel_stages"] = {"items": [{"code": "lead", "name": "Lead"}, {"code": "offer", "name": "Offer"}]}
    return {
        **simple,
        "needs": {
            "categories": [
                {"code": "money", "name": "Money", "needs": [{"code": "save", "name": "Save"}]},
                {"code": "people", "name": "People", "needs": [{"code": "hire", "name": "Hire"}]},
            ]
        },
        "characteristics": {
            "items": [
                {
                    "code": "audit",
                    "name": "Audit",
                    "product": "tax",
                    "needs": ["save"],
                    "talking_points": {"lead": "Hook", "default": "Generic"},
                },
                {
                    "code": "advice",
                    "name": "Advice",
                    "product": "law",
                    "needs": ["hire", "save"],
                    "talking_points": {"offer": "Offer only"},
                },
            ]
        },
    }


def write(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in data.items():
        text = yaml.safe_dump(content, allow_unicode=True, sort_keys=False)
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    return directory


def load_error(directory: Path) -> str:
    with pytest.raises(DictionaryError) as info:
        load(directory)
    return str(info.value)


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_minimal_dictionaries_load(tmp_path: Path) -> None:
    d = load(write(tmp_path, minimal()))
    assert d.characteristic_codes == ["audit", "advice"]
    assert d.stage_codes == ["lead", "offer"]
    assert [(n.code, n.category) for n in d.needs] == [("save", "money"), ("hire", "people")]
    assert d.characteristics[1].needs == ("hire", "save")


def test_codes_are_normalised_everywhere(tmp_path: Path) -> None:
    data = minimal()
    data["products"]["items"][0]["code"] = " TAX "
    data["funnel_stages"]["items"][0]["code"] = " Lead"
    data["needs"]["categories"][0]["code"] = "Money "
    data["needs"]["categories"][0]["needs"][0]["code"] = " Save "
    audit = data["characteristics"]["items"][0]
    audit.update(code=" Foo ", product="Tax", needs=["SAVE "])
    audit["talking_points"] = {" LEAD ": "Hook", "Default": "Generic"}
    d = load(write(tmp_path, data))
    assert normalize_code(" Foo ") == "foo"
    assert d.characteristic_codes[0] == "foo"
    ch = d.characteristics[0]
    assert (ch.product, ch.needs) == ("tax", ("save",))
    assert dict(ch.talking_points) == {"lead": "Hook", "default": "Generic"}
    assert d.stage_codes == ["lead", "offer"]
    assert d.need_categories[0].code == "money"


def test_characteristic_needs_may_be_a_semicolon_string(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][1]["needs"] = "hire; save"
    assert load(write(tmp_path, data)).characteristics[1].needs == ("hire", "save")


def test_checksums_are_stable_and_change_with_the_file(tmp_path: Path) -> None:
    directory = write(tmp_path, minimal())
    first = dictionaries.checksums(directory)
    assert sorted(first) == sorted(FILE_NAMES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in first.values())
    assert dictionaries.checksums(directory) == first
    assert dict(load(directory).checksums) == first

    regions = directory / "regions.yaml"
    regions.write_text(regions.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    second = dictionaries.checksums(directory)
    assert second["regions.yaml"] != first["regions.yaml"]
    assert {k: v for k, v in second.items() if k != "regions.yaml"} == {
        k: v for k, v in first.items() if k != "regions.yaml"
    }


def test_repo_checksums_cover_all_ten_files(repo: Dictionaries) -> None:
    assert dict(repo.checksums) == dictionaries.checksums(REPO_DICTIONARIES)
    assert len(repo.checksums) == 10


# ---------------------------------------------------------------- load errors (contract §1)


@pytest.mark.parametrize("name", dictionaries.ALL_FILES)
def test_missing_file(tmp_path: Path, name: str) -> None:
    directory = write(tmp_path, minimal())
    (directory / f"{name}.yaml").unlink()
    assert_names(load_error(directory), f"{name}.yaml", "missing file")


def test_missing_directory(tmp_path: Path) -> None:
    assert_names(load_error(tmp_path / "nowhere"), "nowhere", "does not exist")


@pytest.mark.parametrize(
    ("name", "key"), [("positions", "items"), ("needs", "categories"), ("characteristics", "items")]
)
def test_missing_top_level_key(tmp_path: Path, name: str, key: str) -> None:
    data = minimal()
    data[name] = {"entries": data[name][key]}
    assert_names(load_error(write(tmp_path, data)), f"{name}.yaml", f"top-level key {key!r}")


@pytest.mark.parametrize(
    ("name", "key"),
    [*((n, "items") for n in dictionaries.SIMPLE_FILES), ("needs", "categories"), ("characteristics", "items")],
)
def test_empty_vocabulary(tmp_path: Path, name: str, key: str) -> None:
    data = minimal()
    data[name] = {key: []}
    assert_names(load_error(write(tmp_path, data)), f"{name}.yaml", repr(key), "empty vocabulary")


def test_empty_need_category(tmp_path: Path) -> None:
    data = minimal()
    data["needs"]["categories"][1]["needs"] = []
    assert_names(load_error(write(tmp_path, data)), "needs.yaml", "category 'people'", "field 'needs'")


def test_duplicate_code_after_normalisation(tmp_path: Path) -> None:
    data = minimal()
    data["positions"]["items"] = [{"code": "CEO", "name": "Chief"}, {"code": " ceo ", "name": "Boss"}]
    assert_names(load_error(write(tmp_path, data)), "positions.yaml", "duplicate code", "'ceo'")


def test_duplicate_need_code_across_categories(tmp_path: Path) -> None:
    data = minimal()
    data["needs"]["categories"][1]["needs"].append({"code": "save", "name": "Save again"})
    assert_names(load_error(write(tmp_path, data)), "needs.yaml", "duplicate need code", "'save'")


def test_duplicate_characteristic_code(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][1]["code"] = "Audit"
    assert_names(load_error(write(tmp_path, data)), "characteristics.yaml", "duplicate code", "'audit'")


def test_unknown_product(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][1]["product"] = "payroll"
    assert_names(
        load_error(write(tmp_path, data)), "characteristics.yaml", "item 'advice'", "field 'product'", "'payroll'"
    )


def test_unknown_need(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][0]["needs"] = ["save", "fly"]
    assert_names(load_error(write(tmp_path, data)), "characteristics.yaml", "item 'audit'", "field 'needs'", "'fly'")


def test_unknown_talking_point_stage(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][1]["talking_points"]["renewal"] = "Later"
    assert_names(
        load_error(write(tmp_path, data)),
        "characteristics.yaml",
        "item 'advice'",
        "field 'talking_points'",
        "'renewal'",
    )


def test_duplicate_talking_point_stage_after_normalisation(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][1]["talking_points"] = {"offer": "One", "Offer ": "Two"}
    assert_names(
        load_error(write(tmp_path, data)), "characteristics.yaml", "item 'advice'", "'talking_points'", "'offer'"
    )


def test_missing_talking_points(tmp_path: Path) -> None:
    data = minimal()
    del data["characteristics"]["items"][0]["talking_points"]
    assert_names(load_error(write(tmp_path, data)), "characteristics.yaml", "item 'audit'", "'talking_points'")


def test_missing_needs_field_is_an_error_and_an_empty_list_is_not(tmp_path: Path) -> None:
    data = minimal()
    del data["characteristics"]["items"][0]["needs"]
    assert_names(load_error(write(tmp_path / "missing", data)), "characteristics.yaml", "item 'audit'", "'needs'")
    data["characteristics"]["items"][0]["needs"] = []
    assert load(write(tmp_path / "empty", data)).characteristics[0].needs == ()


def test_empty_talking_point_text(tmp_path: Path) -> None:
    data = minimal()
    data["characteristics"]["items"][0]["talking_points"]["lead"] = "   "
    assert_names(load_error(write(tmp_path, data)), "characteristics.yaml", "item 'audit'", "'lead'")


def test_missing_name_field(tmp_path: Path) -> None:
    data = minimal()
    del data["regions"]["items"][0]["name"]
    assert_names(load_error(write(tmp_path, data)), "regions.yaml", "item 'regions_a'", "field 'name'")


def test_missing_need_code_names_its_category(tmp_path: Path) -> None:
    data = minimal()
    data["needs"]["categories"][1]["needs"].append({"name": "No code"})
    assert_names(load_error(write(tmp_path, data)), "needs.yaml", "category 'people'", "item #2", "field 'code'")


def test_unquoted_yaml_boolean_code_is_refused(tmp_path: Path) -> None:
    directory = write(tmp_path, minimal())
    (directory / "regions.yaml").write_text("items:\n  - code: no\n    name: Norway\n", encoding="utf-8")
    assert_names(load_error(directory), "regions.yaml", "field 'code'", "boolean")


def test_invalid_yaml(tmp_path: Path) -> None:
    directory = write(tmp_path, minimal())
    (directory / "legal_forms.yaml").write_text("items: [unclosed\n", encoding="utf-8")
    assert_names(load_error(directory), "legal_forms.yaml", "not valid YAML (line 2, column 1: expected ',' or ']'")
    (directory / "legal_forms.yaml").write_bytes("items:\n  - {code: ooo, name: ООО}\n".encode("cp1251"))
    assert_names(load_error(directory), "legal_forms.yaml", "not UTF-8 text (bad byte at offset")


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """A second `items:` appended to regions.yaml replaced the whole vocabulary (every CRM region then unknown)."""
    directory = write(tmp_path, minimal())
    path = directory / "regions.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "items:\n  - {code: only_a, name: A}\n", encoding="utf-8")
    assert_names(load_error(directory), "regions.yaml", "duplicate key 'items' (first given on line 1)")


def test_a_yaml_alias_bomb_gives_a_short_message(tmp_path: Path) -> None:
    """9 nested anchors of 9 aliases: the item's repr was the whole expansion (226 MB, 3.8 GB of RAM)."""
    directory = write(tmp_path, minimal())
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (directory / "regions.yaml").write_text("\n".join(lines) + "\nitems: [*a8]\n", encoding="utf-8")
    message = load_error(directory)
    assert_names(message, "regions.yaml", "item #1 must be a mapping with 'code' and 'name'")
    assert len(message) < 400
