"""`GET /v1/audience` and `GET /v1/organizations/<org_id>/similar` end to end: raw CRM → train → HTTP answer.

The answers must equal the in-process rule (`needs_rec.audience.rank` over the version's own
probabilities, `needs_rec.similar.OrganizationIndex` over its side files with the CRM's outcomes).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_support import serve, settings_for

import crm
from crm.write import write_tables
from needs_rec import artifact, audience, dictionaries, schema, similar
from training import sample
from training.train import train

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = """
network: {hidden_units: [16], dropout: 0.1}
training: {batch_size: 128, max_epochs: 3, patience: 2}
"""

pytestmark = pytest.mark.slow


MANAGERS = ("M-01", "M-02", "M-03")


@pytest.fixture(scope="module", params=["directory", "sqlite"])
def trained(request, tmp_path_factory):
    """A sample CRM with `manager_id` on its outcomes, as a directory or a SQLite database, and a version."""
    root = tmp_path_factory.mktemp(f"queries-{request.param}")
    dicts = dictionaries.load(REPO / "dictionaries")
    crm_dir = sample.write(sample.generate(dicts, n_orgs=150, seed=5), root / "crm", oracle=False)
    outcomes = pd.read_csv(crm_dir / "outcomes.csv", dtype=str, keep_default_na=False)
    outcomes["manager_id"] = [MANAGERS[sum(map(ord, c)) % 3] if c[-1] in "02468" else ""
                              for c in outcomes["contact_id"]]
    outcomes.to_csv(crm_dir / "outcomes.csv", index=False)
    location = str(crm_dir)
    if request.param == "sqlite":
        location = f"sqlite:///{root / 'crm.db'}"
        write_tables(location, {name: pd.read_csv(crm_dir / f"{name}.csv", dtype=str, keep_default_na=False)
                                for name in ("organizations", "contacts", "outcomes")})
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    result = train(location, REPO / "dictionaries", root / "models", config=config, seed=3, baselines=False)
    with crm.open_source(location) as source:
        data, _ = schema.validate(source.read_crm(), dicts)
    return root, location, result.version_dir, dicts, data


@pytest.fixture(scope="module")
def client(trained):
    root, location, _, _, _ = trained
    with serve(settings_for(root / "models", crm=str(location)), "queries") as (test_client, _log):
        yield test_client


def test_audience_answer_is_the_ranked_audience_of_the_crm(client, trained):
    _, _, version, dicts, crm = trained
    code, stage = dicts.characteristic_codes[0], "needs_analysis"
    answer = client.get("/v1/audience", params={"characteristic": code, "stage": stage, "limit": 25})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {"model_version", "characteristic", "stage", "contacts", "total", "scored_at"}
    assert body["model_version"] == int(version.name) and body["characteristic"] == code
    population = audience.Population.from_crm(crm, dicts)
    model = artifact.load(version)
    today = dt.datetime.now(dt.UTC).date()
    expected = audience.rank(population, audience.score_stage(model.predict, population, crm, stage, today),
                             code, stage, limit=25)
    assert [c["contact_id"] for c in body["contacts"]] == list(population.contact_id[expected.rows])
    assert [c["rank"] for c in body["contacts"]] == list(range(1, 26))
    np.testing.assert_allclose([c["probability"] for c in body["contacts"]], expected.probabilities, atol=1e-5)
    assert body["total"] == expected.total < len(population)  # owners of the product are left out


def test_audience_filters(client, trained):
    _, _, _, dicts, crm = trained
    code = dicts.characteristic_codes[0]
    industry = crm.organizations["industry"].iloc[0]
    body = client.get("/v1/audience", params={"characteristic": code, "stage": "retention", "limit": 10000,
                                              "industry": industry, "clients": "only"}).json()
    orgs = crm.organizations.set_index("org_id")
    assert body["contacts"] and body["total"] == len(body["contacts"])
    assert all(orgs.loc[c["org_id"], "industry"] == industry for c in body["contacts"])
    assert all(pd.notna(orgs.loc[c["org_id"], "client_since"]) for c in body["contacts"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"stage": "proposal"}, "field 'characteristic': required"),
        ({"characteristic": "nope", "stage": "proposal"}, "field 'characteristic': unknown characteristic 'nope'"),
        ({"characteristic": "CODE", "stage": "later"}, "field 'stage': unknown stage 'later'"),
        ({"characteristic": "CODE", "stage": "proposal", "limit": "ten"}, "field 'limit': must be a whole number"),
        ({"characteristic": "CODE", "stage": "proposal", "limit": "0"}, "field 'limit': must be from 1 to 10000"),
        ({"characteristic": "CODE", "stage": "proposal", "clients": "all"}, "field 'clients': 'all' is not allowed"),
        # past int64 days this was a 500 (OverflowError in the date arithmetic)
        ({"characteristic": "CODE", "stage": "proposal", "exclude_presented_days": "99999999999999999999"},
         "field 'exclude_presented_days': must be from 1 to 36500"),
        # int() would read these as 3, 5 and 5
        ({"characteristic": "CODE", "stage": "proposal", "limit": "\u0663"}, "field 'limit': must be a whole number"),
        ({"characteristic": "CODE", "stage": "proposal", "limit": "\uff15"}, "field 'limit': must be a whole number"),
        ({"characteristic": "CODE", "stage": "proposal", "limit": "+5"}, "field 'limit': must be a whole number"),
    ],
)
def test_audience_bad_parameters_are_400_naming_them(client, trained, params, message):
    code = trained[3].characteristic_codes[0]
    answer = client.get("/v1/audience", params={k: v.replace("CODE", code) for k, v in params.items()})
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_unknown_parameter_is_a_warning(client, trained):
    code = trained[3].characteristic_codes[0]
    body = client.get("/v1/audience", params={"characteristic": code, "stage": "proposal", "limt": "3"}).json()
    assert body["warnings"] == [f"unknown parameter 'limt' ignored; known: {', '.join(_audience_params())}"]


def test_a_filter_code_outside_the_dictionary_and_a_repeated_parameter_are_warnings(client, trained):
    code = trained[3].characteristic_codes[0]
    answer = client.get("/v1/audience?characteristic=" + code + "&stage=proposal&industry=Bakery&limit=3&limit=5")
    body = answer.json()
    assert answer.status_code == 200 and body["total"] == 0 and len(body["contacts"]) == 0
    assert body["warnings"] == [
        "parameter 'limit' given 2 times; the last value is used",
        "field 'industry': 'Bakery' is not a code of industries.yaml; only contacts whose organization has "
        "exactly this industry are kept",
    ]
    known = client.get("/v1/audience", params={"characteristic": code, "stage": "proposal", "limit": 5,
                                               "industry": trained[4].organizations["industry"].iloc[0].upper()})
    assert known.json()["warnings"] == [] and len(known.json()["contacts"]) == 5


def _audience_params():
    from serving.routes.queries import AUDIENCE_PARAMS

    return AUDIENCE_PARAMS


def test_similar_organizations_answer_matches_the_version_index(client, trained):
    _, _, version, _, crm = trained
    manifest = artifact.read_manifest(version)
    index = similar.OrganizationIndex.read(version / similar.SIDE_DIR, manifest["vocabulary"],
                                           manifest["similar"]["kind"], positives=similar.positive_table(crm),
                                           managers=similar.manager_table(crm))
    positives = similar.positive_table(crm)
    code = positives["characteristic"].value_counts().index[0]
    org = crm.organizations["org_id"].iloc[3]
    answer = client.get(f"/v1/organizations/{org}/similar", params={"characteristic": code, "k": 4})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = index.similar(org, code, 4)
    assert body["org_id"] == org and body["characteristic"] == code and len(body["similar"]) == 4
    assert [s["org_id"] for s in body["similar"]] == [n.org_id for n in expected]
    assert org not in [s["org_id"] for s in body["similar"]]
    sims = [s["similarity"] for s in body["similar"]]
    assert sims == sorted(sims, reverse=True)
    table = positives.set_index(["org_id", "characteristic"])
    for s in body["similar"]:
        assert s["positives"] == table.loc[(s["org_id"], code), "positives"] >= 1
        assert s["last_positive_on"] == table.loc[(s["org_id"], code), "last_positive_on"].isoformat()
    assert body["reason"].startswith("сработало у 4 похожих организаций")
    managers = similar.manager_table(crm).set_index(["org_id", "characteristic"])
    assert managers.index.isin([(s["org_id"], code) for s in body["similar"]]).any()
    for s in body["similar"]:
        expected_managers = managers.loc[[(s["org_id"], code)]] if (s["org_id"], code) in managers.index else []
        assert {m["manager_id"] for m in s["managers"]} <= set(MANAGERS)
        assert len(s["managers"]) == min(len(expected_managers), similar.MAX_MANAGERS)


def test_similar_errors(client, trained):
    code = trained[3].characteristic_codes[0]
    org = trained[4].organizations["org_id"].iloc[0]
    missing = client.get("/v1/organizations/NO-SUCH-ORG/similar", params={"characteristic": code})
    assert missing.status_code == 404 and "unknown organization 'NO-SUCH-ORG'" in missing.json()["error"]
    bad_k = client.get(f"/v1/organizations/{org}/similar", params={"characteristic": code, "k": "500"})
    assert bad_k.status_code == 400 and "field 'k'" in bad_k.json()["error"]
    no_char = client.get(f"/v1/organizations/{org}/similar")
    assert no_char.status_code == 400 and "field 'characteristic': required" in no_char.json()["error"]


def test_numbers_of_any_length_and_long_values_are_400s_that_stay_short(client, trained):
    """4,301 digits made int() raise (a 500); 60,000 characters came back whole in the error."""
    code = trained[3].characteristic_codes[0]
    org = trained[4].organizations["org_id"].iloc[0]
    huge = "9" * 4301
    for path, params, field in (
        ("/v1/audience", {"characteristic": code, "stage": "lead", "limit": huge}, "limit"),
        ("/v1/audience", {"characteristic": code, "stage": "lead", "exclude_presented_days": huge},
         "exclude_presented_days"),
        (f"/v1/organizations/{org}/similar", {"characteristic": code, "k": huge}, "k"),
    ):
        answer = client.get(path, params=params)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith(f"field '{field}': must be from 1 to ") and len(answer.text) < 300
    assert client.get(f"/v1/models/needs_rec/versions/{huge}").status_code == 404
    long = "A" * 60_000
    for answer in (client.get("/v1/audience", params={"characteristic": long, "stage": "lead"}),
                   client.get("/v1/audience", params={"characteristic": code, "stage": long}),
                   client.get(f"/v1/organizations/{long}/similar", params={"characteristic": code}),
                   client.get(f"/v1/organizations/{org}/similar", params={"characteristic": long})):
        assert answer.status_code in (400, 404) and len(answer.text) < 1000, answer.text[:200]


def test_similar_is_404_for_an_organization_gone_from_the_crm_and_takes_ids_with_a_slash(trained, tmp_path):
    """An organization the version indexed but the CRM no longer holds answered 200; an id with '/' (%2F)
    was 'no such endpoint'."""
    root, _, _, dicts, data = trained
    code = dicts.characteristic_codes[0]
    gone = data.organizations["org_id"].iloc[0]
    crm_dir = tmp_path / "crm"
    crm_dir.mkdir()
    for name in ("organizations", "contacts", "outcomes"):
        frame = pd.read_csv(root / "crm" / f"{name}.csv", dtype=str, keep_default_na=False)
        if name == "organizations":
            frame = frame[frame["org_id"] != gone]
        elif name == "contacts":
            left = frame[frame["org_id"] == gone]["contact_id"]
            frame = frame[frame["org_id"] != gone]
        else:
            frame = frame[~frame["contact_id"].isin(left)]
        frame.to_csv(crm_dir / f"{name}.csv", index=False)
    with serve(settings_for(root / "models", crm=str(crm_dir)), "gone") as (test_client, _log):
        answer = test_client.get(f"/v1/organizations/{gone}/similar", params={"characteristic": code})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == f"unknown organization '{gone}': not in the CRM source"
        slash = test_client.get("/v1/organizations/ORG%2F0001/similar", params={"characteristic": code})
        assert slash.status_code == 404 and "unknown organization 'ORG/0001'" in slash.json()["error"], slash.text


def test_queries_max_age_s_sets_how_soon_a_crm_edit_reaches_the_audience(trained, tmp_path):
    """The snapshot's 15 minutes were fixed: after a CRM edit the audience and the card differed that long."""
    from serving_support import wait_until

    root, _, _, dicts, _ = trained
    crm_dir = tmp_path / "crm"
    crm_dir.mkdir()
    for name in ("organizations", "contacts", "outcomes"):
        (crm_dir / f"{name}.csv").write_bytes((root / "crm" / f"{name}.csv").read_bytes())
    params = {"characteristic": dicts.characteristic_codes[0], "stage": "needs_analysis", "limit": 10000}
    with serve(settings_for(root / "models", crm=str(crm_dir), queries_max_age_s=0.2), "fresh") as (test_client, _):
        before = test_client.get("/v1/audience", params=params).json()
        first = before["contacts"][0]["contact_id"]
        contacts = pd.read_csv(crm_dir / "contacts.csv", dtype=str, keep_default_na=False)
        contacts[contacts["contact_id"] != first].to_csv(crm_dir / "contacts.csv", index=False)

        def edit_seen() -> bool:
            answer = test_client.get("/v1/audience", params=params).json()  # a stale one starts a rebuild
            return answer["total"] == before["total"] - 1 and first not in {c["contact_id"] for c in answer["contacts"]}

        assert wait_until(edit_seen, timeout=60, interval=0.3)


def test_without_a_crm_source_both_queries_are_503(built):
    with serve(settings_for(built["fixed"].parent), "no_crm") as (test_client, _log):
        for path in ("/v1/audience?characteristic=ch_price&stage=lead",
                     "/v1/organizations/o1/similar?characteristic=x"):
            answer = test_client.get(path)
            assert answer.status_code == 503
            assert "needs a CRM source (--crm)" in answer.json()["error"]


def test_card_reasons_never_wait_and_come_from_the_nearest_organizations(client, trained):
    from serving_support import wait_until

    from serving.queries import similar_reasons, snapshots_for

    crm = trained[4]
    service = client.app.state.service
    model = service.registry.current
    positives = similar.positive_table(crm)
    code = positives["characteristic"].value_counts().index[0]
    orgs = list(crm.organizations["org_id"])
    assert wait_until(lambda: any(similar_reasons(service, model, org, [code]) for org in orgs[:40]), timeout=60)
    snapshot = snapshots_for(service).peek(model)
    for org in orgs[:40]:
        reasons = similar_reasons(service, model, org, [code])
        nearest = snapshot.index.card_neighbours(org, [code])[code]
        if nearest:
            assert reasons[code].startswith(f"сработало у {len(nearest)} ")
        else:
            assert code not in reasons
    assert similar_reasons(service, model, "NO-SUCH-ORG", [code]) == {}


def test_the_managers_card_carries_the_similar_organizations_reason(client, trained, monkeypatch):
    from serving_support import wait_until

    from serving.manager import score_card
    from serving.queries import similar_reasons

    location, data = trained[1], trained[4]
    service = client.app.state.service
    model = service.registry.current
    source = crm.open_source(location)
    contact_id = data.contacts["contact_id"].iloc[0]
    record = source.contact(contact_id)
    codes = list(model.vocabulary)
    assert wait_until(lambda: similar_reasons(service, model, record.org_id, codes), timeout=60)
    expected = similar_reasons(service, model, record.org_id, codes)
    # what the card records about its answer (exposures) is not what this test is about
    monkeypatch.setattr(service, "record_answer", lambda *args: "request-1", raising=False)
    card = client.portal.call(score_card, service, model, record, "proposal", True)
    with_reason = [p for p in card.points if p["characteristic"] in expected]
    assert with_reason
    for point in with_reason:
        assert point["reasons"][-1] == expected[point["characteristic"]]


def test_a_crm_row_that_breaks_the_contract_is_left_out_not_a_503(trained, tmp_path):
    """One wrong value in the CRM (strict validation would refuse the whole CRM) leaves its row out
    of the queries, says so in their warnings and the log, and every other contact is still ranked."""
    import shutil

    from databases import postgres_schema

    root, location, _, dicts, data = trained
    tables = {name: pd.read_csv(root / "crm" / f"{name}.csv", dtype=str, keep_default_na=False)
              for name in ("organizations", "contacts", "outcomes")}
    bad_org = tables["organizations"]["org_id"].iloc[2]
    tables["organizations"].loc[2, "employees"] = "12 staff"
    gone = set(tables["contacts"].loc[tables["contacts"]["org_id"] == bad_org, "contact_id"])
    assert gone
    code = dicts.characteristic_codes[0]
    good_org = tables["organizations"]["org_id"].iloc[0]

    def check(broken: str, name: str) -> None:
        with serve(settings_for(root / "models", crm=broken), name) as (test_client, log):
            answer = test_client.get("/v1/audience",
                                     params={"characteristic": code, "stage": "first_contact", "limit": 10000})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            ranked = {c["contact_id"] for c in body["contacts"]}
            assert ranked and not ranked & gone
            assert ranked <= set(data.contacts["contact_id"]) - gone
            notes = [w for w in body["warnings"] if w.startswith("CRM data: ")]
            assert len(notes) == 2  # the organization, and its contacts
            assert "'employees'" in notes[0] and "'12 staff' (row 3)" in notes[0]
            assert f"{len(gone)} rows left out" in notes[1] or f"{len(gone)} row left out" in notes[1]
            similar_answer = test_client.get(f"/v1/organizations/{good_org}/similar", params={"characteristic": code})
            assert similar_answer.status_code == 200, similar_answer.text
            assert similar_answer.json()["warnings"] == notes
            lines = [line for line in log.getvalue().splitlines() if "crm_rows_left_out" in line]
            assert lines and "12 staff" not in log.getvalue()
            page = test_client.get("/analyst")
            assert page.status_code == 200 and "Проверка данных CRM" in page.text
            assert "&#39;12 staff&#39; (row 3)" in page.text and "не участвуют в подборе аудитории" in page.text

    if location.startswith("sqlite"):
        broken = f"sqlite:///{tmp_path / 'broken.db'}"
        write_tables(broken, tables)
        check(broken, "left_out_sqlite")
        with postgres_schema() as url:
            write_tables(url, tables)
            check(url, "left_out_postgresql")
    else:
        shutil.copytree(root / "crm", tmp_path / "broken")
        tables["organizations"].to_csv(tmp_path / "broken" / "organizations.csv", index=False)
        check(str(tmp_path / "broken"), "left_out_directory")


def test_the_analyst_page_says_when_every_crm_row_passed(client, trained):
    code = trained[3].characteristic_codes[0]
    assert client.get("/v1/audience", params={"characteristic": code, "stage": "proposal"}).status_code == 200
    page = client.get("/analyst").text
    assert "Проверка данных CRM" in page and "Все строки CRM прошли проверку" in page
