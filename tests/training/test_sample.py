"""`training.sample`: the synthetic CRM generator, its files, its oracle and its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from needs_rec import schema
from needs_rec.cli import run_cli
from needs_rec.dictionaries import Dictionaries, load, normalize_code
from needs_rec.errors import ConfigError, DictionaryError
from needs_rec.schema import CONTACTS, MULTI_SEPARATOR, NEGATIVE, ORGANIZATIONS, OUTCOMES, POSITIVE, Kind
from training.sample import DEFAULT_DICTIONARIES, ORACLE_FILE, generate, write
from training.sample import output as sample_output

REPO = Path(__file__).resolve().parents[2]
OTHER_FIRM = REPO / "tests" / "fixtures" / "other_firm"
EPISODE_KEY = ["contact_id", "occurred_on", "stage"]
FILES = ["organizations.csv", "contacts.csv", "outcomes.csv", ORACLE_FILE, "README.md"]


@pytest.fixture(scope="module")
def repo_dictionaries() -> Dictionaries:
    return load(DEFAULT_DICTIONARIES)


@pytest.fixture(scope="module")
def small(repo_dictionaries):
    """40 organizations: enough for structural checks."""
    return generate(repo_dictionaries, n_orgs=40, seed=11)


@pytest.fixture(scope="module")
def medium(repo_dictionaries):
    """400 organizations: enough for the statistical checks (a fraction of a second)."""
    return generate(repo_dictionaries, n_orgs=400, seed=5)


def normalized(series: pd.Series) -> pd.Series:
    return series.map(normalize_code)


def split_codes(text: str) -> list[str]:
    return [normalize_code(c) for c in text.split(MULTI_SEPARATOR) if c.strip()]


def label_matrix(s, dictionaries: Dictionaries) -> np.ndarray:
    """Episodes (oracle row order) × characteristics: 1 where the outcome was positive."""
    outcomes = s.outcomes.assign(
        stage=normalized(s.outcomes.stage), characteristic=normalized(s.outcomes.characteristic)
    )
    positive = outcomes[outcomes.outcome == POSITIVE]
    episodes = pd.MultiIndex.from_frame(s.oracle[EPISODE_KEY])
    rows = episodes.get_indexer(pd.MultiIndex.from_frame(positive[EPISODE_KEY]))
    assert (rows >= 0).all(), "a positive outcome outside the oracle's episodes"
    index = {c: i for i, c in enumerate(dictionaries.characteristic_codes)}
    labels = np.zeros((len(episodes), len(index)))
    labels[rows, positive.characteristic.map(index).to_numpy()] = 1.0
    return labels


def assert_valid_codes(s, dictionaries: Dictionaries) -> None:
    """Every code of every code column, after normalisation, is in its dictionary (empty = missing)."""
    frames = {ORGANIZATIONS.name: s.organizations, CONTACTS.name: s.contacts, OUTCOMES.name: s.outcomes}
    for table in (ORGANIZATIONS, CONTACTS, OUTCOMES):
        frame = frames[table.name]
        for column in table.columns:
            if column.vocabulary is None:
                continue
            known = set(dictionaries.codes(column.vocabulary) if column.vocabulary != "needs" else
                        [n.code for n in dictionaries.needs])  # fmt: skip
            if column.kind is Kind.MULTI:
                found = {code for text in frame[column.name] for code in split_codes(text)}
            else:
                found = set(normalized(frame[column.name])) - {""}
            assert found, f"{table.name}.{column.name} holds no code at all"
            assert found <= known, f"{table.name}.{column.name}: unknown {sorted(found - known)[:5]}"


# ---- determinism -------------------------------------------------------------------------------------
def test_same_seed_writes_identical_bytes(repo_dictionaries, tmp_path):
    first = write(generate(repo_dictionaries, n_orgs=40, seed=3), tmp_path / "a")
    second = write(generate(repo_dictionaries, n_orgs=40, seed=3), tmp_path / "b")
    assert sorted(p.name for p in first.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seed_gives_different_data(repo_dictionaries, small):
    other = generate(repo_dictionaries, n_orgs=40, seed=12)
    for table in ("organizations", "contacts", "outcomes", "oracle"):
        assert not getattr(small, table).equals(getattr(other, table)), table


def test_bad_sizes_and_seeds_are_refused(repo_dictionaries):
    for n_orgs in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="orgs"):
            generate(repo_dictionaries, n_orgs=n_orgs, seed=1)
    with pytest.raises(ConfigError, match="seed"):
        generate(repo_dictionaries, n_orgs=5, seed=-1)


# ---- the tables against the contract ---------------------------------------------------------------
def test_every_contract_column_is_present(small):
    frames = {"organizations": small.organizations, "contacts": small.contacts, "outcomes": small.outcomes}
    for table in (ORGANIZATIONS, CONTACTS, OUTCOMES):
        assert [c.name for c in table.columns if c.name not in frames[table.name].columns] == [], table.name
        for name in table.required:
            assert (frames[table.name][name].str.strip() != "").all(), f"empty required {table.name}.{name}"
    assert {"name", "inn"} <= set(small.organizations.columns)
    assert {"full_name", "email", "phone"} <= set(small.contacts.columns)


def test_codes_normalise_into_the_dictionaries(small, repo_dictionaries):
    assert_valid_codes(small, repo_dictionaries)


def test_data_is_messy_like_a_real_export(medium):
    stages = medium.outcomes.stage
    assert (stages != normalized(stages)).any(), "no code with odd case or spaces"
    assert (normalized(stages) == stages).mean() > 0.9
    for column in ("region", "employees", "legal_form"):
        share = (medium.organizations[column] == "").mean()
        assert 0.0 < share < 0.15, column
    assert medium.organizations.inn.str.fullmatch(r"\d{10}|\d{12}").all()
    assert medium.contacts.full_name.str.contains(r"^[А-ЯЁ][а-яё]+ [А-ЯЁ][а-яё]+", regex=True).all()


def test_ids_dates_and_outcomes_are_consistent(small, repo_dictionaries):
    orgs, contacts, outcomes = small.organizations, small.contacts, small.outcomes
    assert orgs.org_id.is_unique and contacts.contact_id.is_unique
    assert contacts.org_id.isin(orgs.org_id).all()
    assert outcomes.contact_id.isin(contacts.contact_id).all()
    assert set(normalized(outcomes.characteristic)) <= set(repo_dictionaries.characteristic_codes)
    assert set(outcomes.outcome) == {POSITIVE, NEGATIVE}
    dates = pd.to_datetime(outcomes.occurred_on, format="%Y-%m-%d")
    assert dates.min() >= pd.Timestamp("2020-01-01") and dates.max() <= pd.Timestamp("2025-12-31")
    since = orgs.client_since[orgs.client_since != ""]
    pd.to_datetime(since, format="%Y-%m-%d")  # raises when not ISO
    prospects = orgs[orgs.client_since == ""]
    assert (prospects.products_owned == "").all(), "a prospect owns products"
    numbers = pd.to_numeric(orgs.employees.replace("", np.nan))
    assert (numbers.dropna() >= 0).all() and (numbers.dropna() <= 5).any()


def test_each_contact_moves_forward_through_the_funnel(medium, repo_dictionaries):
    """A contact's history: journeys (from the first stage, one stage at a time) and, in between,
    retention talks at the last stage 6-18 months apart; a new journey starts a year or more after
    the previous talk. Dates strictly rise, so no two episodes of a contact share a date."""
    order = {code: i for i, code in enumerate(repo_dictionaries.stage_codes)}
    last = len(order) - 1
    episodes = medium.oracle[EPISODE_KEY].assign(
        rank=medium.oracle.stage.map(order), day=pd.to_datetime(medium.oracle.occurred_on, format="%Y-%m-%d")
    )
    restarts = repeated_retention = 0
    for _, history in episodes.sort_values(["contact_id", "occurred_on"]).groupby("contact_id"):
        ranks = history["rank"].to_numpy()
        gaps = np.diff(history.day.to_numpy()).astype("timedelta64[D]").astype(np.int64)
        assert ranks[0] == 0 and (gaps > 0).all(), history
        forward = np.diff(ranks) == 1
        restart = (ranks[1:] == 0) & (gaps >= 365)
        retention = (ranks[1:] == last) & (gaps >= 180) & (gaps <= 540)
        assert (forward | restart | retention).all(), history
        restarts += int(restart.sum())
        repeated_retention += int(((ranks[:-1] == last) & (ranks[1:] == last)).sum())
    assert restarts > 0 and repeated_retention > 0


def test_relationships_span_the_years(medium):
    """Split by date at the 70th percentile: a good share of the episodes after the split come from
    organizations already seen before it (clients keep coming back), yet new ones keep arriving
    (cold start), and organizations enter the CRM every year."""
    org = medium.oracle.contact_id.map(medium.contacts.set_index("contact_id").org_id)
    dates = medium.oracle.occurred_on
    cut = dates.sort_values().iloc[int(0.7 * len(dates))]
    returning = org[dates >= cut].isin(set(org[dates < cut])).mean()
    assert 0.3 <= returning <= 0.8, returning
    first_seen = dates.groupby(org).min().str[:4]
    assert set(first_seen) == {str(year) for year in range(2020, 2026)}


def test_the_repo_validator_accepts_the_sample(medium, repo_dictionaries, tmp_path):
    from crm import files as data

    _, report = schema.validate(data.read_crm(write(medium, tmp_path / "crm")), repo_dictionaries)
    assert report.outcome_rows_dropped == 0
    assert [w.message for w in report.warnings if w.kind != "missing_value"] == []
    assert report.episodes == len(medium.oracle)


# ---- the oracle --------------------------------------------------------------------------------------
def test_oracle_has_one_row_per_episode_and_probabilities(small, repo_dictionaries):
    oracle = small.oracle
    codes = repo_dictionaries.characteristic_codes
    assert list(oracle.columns) == [*EPISODE_KEY, *codes]
    assert not oracle.duplicated(EPISODE_KEY).any()
    outcomes = small.outcomes.assign(stage=normalized(small.outcomes.stage))
    episodes = outcomes[EPISODE_KEY].drop_duplicates().sort_values(EPISODE_KEY).reset_index(drop=True)
    assert episodes.equals(oracle[EPISODE_KEY].sort_values(EPISODE_KEY).reset_index(drop=True))
    values = oracle[codes].to_numpy()
    assert values.dtype == np.float32
    assert (values >= 0).all() and (values <= 1).all() and values.max() > 0.1


def test_oracle_matches_the_outcomes(medium, repo_dictionaries):
    """The labels are Bernoulli draws of the oracle: totals and the top decile agree."""
    labels = label_matrix(medium, repo_dictionaries)
    oracle = medium.oracle[repo_dictionaries.characteristic_codes].to_numpy(dtype=np.float64)
    assert labels.sum() == pytest.approx(oracle.sum(), rel=0.05)
    top = oracle >= np.quantile(oracle, 0.9)
    assert labels[top].mean() == pytest.approx(oracle[top].mean(), rel=0.08)
    assert labels[oracle == 0].sum() == 0  # never positive where it cannot be
    per_episode = labels.sum(axis=1).mean()
    assert 2.0 <= per_episode <= 4.0
    assert 5.0 <= len(medium.oracle) / medium.n_orgs <= 9.0
    assert (oracle.mean(axis=0) < 0.01).any(), "no rare characteristic"


def test_owned_products_are_retained_at_the_last_stage_not_resold_earlier(medium, repo_dictionaries):
    """Same contact, same characteristic: resonance of an owned product's characteristic is higher
    at the last funnel stage than at the first; for products not owned that jump is much smaller."""
    stages = repo_dictionaries.stage_codes
    codes = repo_dictionaries.characteristic_codes
    product = np.array([c.product for c in repo_dictionaries.characteristics])
    resonance = medium.oracle[codes].to_numpy() / medium.presentation.loc[medium.oracle.stage].to_numpy()
    org_of = medium.contacts.set_index("contact_id").org_id
    owned = medium.organizations.set_index("org_id").products_owned.map(lambda t: set(split_codes(t)))
    first = np.flatnonzero(medium.oracle.stage.to_numpy() == stages[0])
    last = np.flatnonzero(medium.oracle.stage.to_numpy() == stages[-1])
    first_of = dict(zip(medium.oracle.contact_id.to_numpy()[first], first, strict=True))
    owned_jump, other_jump = [], []
    for row in last:
        contact = medium.oracle.contact_id.iat[row]
        mask = np.isin(product, sorted(owned[org_of[contact]]))
        jump = resonance[row] - resonance[first_of[contact]]
        owned_jump.extend(jump[mask])
        other_jump.extend(jump[~mask])
    assert len(owned_jump) >= 20, "too few owned-product pairs to judge"
    assert np.mean(owned_jump) > 0.1
    assert np.mean(np.array(owned_jump) > 0) > 0.8
    assert np.mean(owned_jump) > np.mean(other_jump) + 0.1


# ---- any firm's dictionaries -------------------------------------------------------------------------
def test_other_firms_dictionaries_work(repo_dictionaries):
    if not OTHER_FIRM.is_dir():
        pytest.skip("tests/fixtures/other_firm not present yet")
    other = load(OTHER_FIRM)
    s = generate(other, n_orgs=40, seed=1)
    assert_valid_codes(s, other)
    assert list(s.oracle.columns[3:]) == other.characteristic_codes
    assert set(s.oracle.stage) <= set(other.stage_codes)


def test_tiny_dictionaries_work(tiny_dictionaries):
    s = generate(tiny_dictionaries, n_orgs=40, seed=2)
    assert_valid_codes(s, tiny_dictionaries)
    assert len(s.oracle) > 0


def test_minimal_dictionaries_and_stage_limited_talking_points(tmp_path):
    """One code everywhere, two stages, a characteristic offered only at the first stage."""
    one = {"items": [{"code": "only", "name": "Единственный"}]}
    files = {name: one for name in ("industries", "regions", "positions", "departments", "decision_roles",
                                    "legal_forms", "products")}  # fmt: skip
    files["funnel_stages"] = {"items": [{"code": "A", "name": "Первый"}, {"code": "B", "name": "Второй"}]}
    files["needs"] = {"categories": [{"code": "c", "name": "К", "needs": [{"code": "n", "name": "Н"}]}]}
    files["characteristics"] = {
        "items": [
            {"code": "early", "name": "Р", "product": "only", "needs": ["n"], "talking_points": {"a": "только A"}},
            {"code": "always", "name": "В", "product": "only", "needs": [], "talking_points": {"default": "всегда"}},
        ]
    }
    for name, content in files.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")
    dictionaries = load(tmp_path)
    s = generate(dictionaries, n_orgs=30, seed=4)
    assert_valid_codes(s, dictionaries)
    at_b = s.oracle[s.oracle.stage == "b"]
    assert len(at_b) > 0 and (at_b["early"] == 0).all() and (at_b["always"] > 0).all()
    assert not ((normalized(s.outcomes.stage) == "b") & (normalized(s.outcomes.characteristic) == "early")).any()


# ---- writing and the command line ------------------------------------------------------------------
def test_write_refuses_a_non_empty_directory_and_accepts_an_empty_one(small, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        write(small, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write(small, empty, oracle=False)
    assert sorted(p.name for p in empty.iterdir()) == sorted(set(FILES) - {ORACLE_FILE})
    assert "seed: 11" in (empty / "README.md").read_text(encoding="utf-8")


def test_a_failed_write_leaves_nothing_behind(small, tmp_path, monkeypatch):
    calls = []

    def failing(frame, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        path.write_text("partial")

    monkeypatch.setattr(sample_output, "_write_csv", failing)
    with pytest.raises(OSError, match="disk full"):
        write(small, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def run_module(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.sample", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_writes_a_sample_then_refuses_to_overwrite_it(tmp_path):
    out = tmp_path / "crm"
    done = run_module("--output", str(out), "--orgs", "25", "--seed", "9")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert "25 organizations" in done.stdout
    before = (out / "outcomes.csv").read_bytes()

    again = run_module("--output", str(out), "--orgs", "25", "--seed", "10")
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr.startswith("error: ") and again.stderr.count("\n") == 1, again.stderr
    assert "not an empty directory" in again.stderr
    assert (out / "outcomes.csv").read_bytes() == before


def test_cli_usage_errors_are_one_line(tmp_path):
    out = str(tmp_path / "x")
    for args in (["--output", out, "--orgs", "0"], ["--output", out, "--seed", "x"], ["--orgs", "5"]):
        done = run_module(*args)
        assert done.returncode == 2, args
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "--help" in done.stderr
    assert not (tmp_path / "x").exists()


def test_cli_reports_bad_dictionaries_in_one_line(tmp_path):
    done = run_module("--output", str(tmp_path / "x"), "--dictionaries", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "does not exist" in done.stderr
    assert not (tmp_path / "x").exists()


# ---- needs_rec.cli -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (DictionaryError("industries.yaml: missing file\nsecond line"), "industries.yaml: missing file second line"),
        (FileNotFoundError(2, "No such file or directory", "/nowhere/x.csv"), "No such file or directory: /nowhere"),
        (PermissionError(13, "Permission denied", "/root/y"), "Permission denied: /root/y"),
    ],
)
def test_run_cli_turns_user_errors_into_one_line_and_exit_2(capsys, exc, fragment):
    def main(argv):
        raise exc

    with pytest.raises(SystemExit) as exited:
        run_cli(main, [])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out == ""
    assert err.startswith(f"error: {fragment}") and err.count("\n") == 1, err


def test_run_cli_passes_the_exit_code_and_keeps_bugs_loud():
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda argv: 3, [])
    assert exited.value.code == 3
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda argv: None, [])
    assert exited.value.code == 0

    def buggy(argv):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(buggy, [])

