"""The pages' server side: the analyst page over a models directory, the report and its charts, assets, headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_support import models_dir_with, serve, settings_for, wait_until

from serving import analyst
from serving.web import CONTENT_SECURITY_POLICY, chance_words, probability_word, shown_percent

# the smallest valid PNG (1x1), standing in for a report chart
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
    "ff3f0005fe02fea7d6a4c50000000049454e44ae426082"
)
REPORT = """# Отчёт модели

Текст с <script>alert("x")</script> внутри.

| метод | ndcg@5 |
| :--- | ---: |
| network | 0.412 |

![Calibration](report_calibration.png)

![Outside](../report_secret.png) ![Remote](http://evil.example/report_x.png) ![Other](manifest.json)

[ссылка](javascript:alert(1))
"""
PROMOTIONS = [  # the shapes training.retrain and serving.promote append
    {"at": "2026-11-01T10:00:00+00:00", "action": "retrain", "decision": "first", "challenger": 1, "champion": None,
     "line": "retrain: promoted version 1 to stable (first version, no champion)", "pid": 11, "gate": {"x": 1}},
    {"at": "2026-11-20T10:00:00+00:00", "action": "retrain", "decision": "promoted", "challenger": 2, "champion": 1,
     "figures": {"ndcg@5": 0.41, "champion_ndcg@5": 0.39}, "line": "retrain: promoted version 2 to stable"},
    {"at": "2026-11-20T11:00:00+00:00", "action": "rollback", "stable": 1, "previous": 2, "by": "serving.promote"},
    {"at": "2026-11-19T09:00:00+00:00", "action": "retrain", "decision": "error", "data": "sqlite:////srv/firm/crm.db",
     "line": "retrain: error: gate file '/srv/firm/conf/nightly.yaml': not UTF-8 text", "error": "see /srv/firm/x.log"},
]


@pytest.fixture(scope="module")
def models(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1 (fixed), 2 (random, with a report and a chart), 3 (fixed, a candidate); stable 2, previous 1."""
    root = models_dir_with(tmp_path_factory.mktemp("analyst"), built["fixed"], built["random"], built["fixed"])
    (root / "2" / "report.md").write_text(REPORT, encoding="utf-8")
    (root / "2" / "report_calibration.png").write_bytes(PNG)
    (root / "report_secret.png").write_bytes(PNG)
    (root / "2" / "report_link.png").symlink_to(root / "report_secret.png")
    (root / "labels.json").write_text(json.dumps({"stable": 2, "previous": 1}))
    lines = [json.dumps(p) for p in PROMOTIONS] + ['{"at": "2026-11-21", "decis']  # a torn last line
    (root / "promotions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def client(models: Path) -> Iterator[TestClient]:
    """The service over the models directory (it serves the newest, 3: labels are issue 10's to follow)."""
    with serve(settings_for(models), "pages") as (client, _):
        yield client


def test_analyst_page_headers(client: TestClient) -> None:
    page = client.get("/analyst")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline for the CSP to block
    assert re.search(r'<script src="/static/needs_rec\.js\?v=[0-9a-f]{12}" defer></script>', page.text)


def test_versions_side_by_side(client: TestClient) -> None:
    page = client.get("/analyst").text
    assert re.findall(r'<th scope="col" data-version="(\d+)"', page) == ["2", "1", "3"]  # stable, previous, cand.
    head = page.split('data-version="2"')[1].split("</th>")[0]
    assert 'class="badge stable"' in head
    assert 'class="badge previous"' in page.split('data-version="1"')[1].split("</th>")[0]
    assert 'class="badge candidate"' in page.split('data-version="3"')[1].split("</th>")[0]
    assert "NDCG@5" in page and "micro-F1" in page
    assert page.count('<a href="/analyst?report=2#report">') == 1  # only version 2 has a report


def test_report_rendered_safely_with_its_charts(client: TestClient) -> None:
    page = client.get("/analyst").text
    report = page.split('<article class="report">')[1].split("</article>")[0]
    assert "<h1>Отчёт модели</h1>" in report
    assert "&lt;script&gt;" in report and "<script" not in report  # raw HTML in report.md is shown, never run
    assert '<td class="align-right">0.412</td>' in report and "style=" not in report
    assert '<img src="/analyst/versions/2/report_calibration.png" alt="Calibration"' in report
    assert "report_secret" not in report and "evil.example" not in report and "manifest.json" not in report
    assert 'href="javascript' not in report
    chart = client.get("/analyst/versions/2/report_calibration.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png" and chart.content == PNG


@pytest.mark.parametrize(
    "path",
    ["/analyst/versions/2/manifest.json", "/analyst/versions/2/report_link.png", "/analyst/versions/9/report_gain.png",
     "/analyst/versions/x/report_calibration.png", "/analyst/versions/2/..%2F..%2Freport_secret.png",
     "/analyst/versions/2/report_missing.png"],
)
def test_charts_only_from_inside_a_version(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404 and "error" in answer.json()


def test_report_of_another_version(client: TestClient) -> None:
    page = client.get("/analyst?report=1").text
    assert "У версии 1 нет отчёта." in page and '<article class="report">' not in page


@pytest.mark.parametrize("asked", ["0", "99", "abc", "-1", "1e3", "../1", "1\x00"])
def test_a_report_of_no_version_says_so_and_shows_the_newest(client: TestClient, asked: str) -> None:
    """report=99 said «У версии 99 нет отчёта», report=abc silently showed the default one."""
    page = client.get("/analyst", params={"report": asked}).text
    default = client.get("/analyst").text
    shown = asked.replace("\x00", "\ufffd")
    assert f"Версии «{shown}» нет; показан отчёт версии 2." in page
    assert page.count('<article class="report">') == default.count('<article class="report">') == 1
    assert "нет; показан отчёт" not in default


def test_promotion_log_newest_first_and_torn_lines_counted(client: TestClient) -> None:
    page = client.get("/analyst").text
    log = page.split('<ol class="promotions" reversed>')[1].split("</ol>")[0]
    assert log.index("2026-11-20 11:00 UTC") < log.index("2026-11-20 10:00 UTC") < log.index("2026-11-01 10:00 UTC")
    assert "retrain: promoted version 2 to stable" in log and "challenger: 2" in log and "figures.ndcg@5: 0.41" in log
    assert "откат" in log and "stable: 1 · previous: 2" in log
    assert "pid" not in log and "gate." not in log
    assert "1 строк(и) журнала не читаются" in page
    # the log records where the data and the gate file were; the page names the files, never the server's paths
    assert "/srv/firm" not in page
    assert "gate file &#39;nightly.yaml&#39;: not UTF-8 text" in log
    assert "data: sqlite:///crm.db" in log and "see x.log" in log


def test_unknown_codes_per_field_since_start(client: TestClient) -> None:
    body = {"stage": "lead", "organization": {"industry": "no_such_industry"}, "contact": {"position": "ceo"}}
    assert client.post("/v1/recommendations", json=body).status_code == 200
    table = client.get("/analyst").text.split('<table class="unknown">')[1].split("</table>")[0]
    row = re.search(r'<th scope="row">([^<]*industry[^<]*)</th><td>(\d+)</td>', table)
    assert row is not None and int(row.group(2)) >= 1


def test_feedback_section_says_why_it_is_empty_without_a_crm(client: TestClient) -> None:
    page = client.get("/analyst").text
    assert "без источника CRM (--crm)" in page
    assert "Проверка данных CRM" not in page  # nothing to check without a CRM source


def test_manager_page_without_a_crm_says_what_to_do(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<input id="q" name="q" type="search"' in page.text
    assert "перезапустите его с --crm" in page.text
    assert client.get("/?q=Ромашка").status_code == 503


def test_static_assets_are_shipped_and_cached(client: TestClient) -> None:
    for name, kind in (("needs_rec.js", "text/javascript"), ("needs_rec.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert "max-age" in answer.headers["Cache-Control"]
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/base.html").status_code == 404


def test_overview_without_labels_has_no_candidates(built: dict[str, Path], tmp_path: Path) -> None:
    root = models_dir_with(tmp_path, built["fixed"], built["fixed"])
    overview = analyst.overview(root, served=2)
    assert [(r.number, r.roles) for r in overview.rows] == [(2, ("served",)), (1, ())]
    assert overview.promotions is None  # no promotions.jsonl yet: the page says it will appear after a retrain


@pytest.mark.parametrize(("p", "word"), [(0.95, "высокая"), (0.7, "высокая"), (0.55, "средняя"),
                                         (0.25, "низкая"), (0.05, "очень низкая")])
def test_probability_words(p: float, word: str) -> None:
    assert probability_word(p) == word


@pytest.mark.parametrize(("p", "usual", "word", "comparison"), [
    (0.12, 0.04, "высокий", "в 3 раза чаще, чем в среднем на этапе"),
    (0.06, 0.04, "выше среднего", "в 1,5 раза чаще, чем в среднем на этапе"),
    (0.04, 0.04, "средний", "как в среднем на этапе"),
    (0.01, 0.04, "ниже среднего", "в 4 раза реже, чем в среднем на этапе"),
    (0.12, None, "очень низкая", None),  # no reference: the absolute word
])
def test_a_positive_only_chance_is_read_against_the_stage(p: float, usual: float | None, word: str,
                                                          comparison: str | None) -> None:
    """On a positive-only CRM every top point read «очень низкая — около 12 %», the best pick of a stage
    where 4 % of conversations are usual included."""
    assert chance_words(p, usual) == (word, comparison)


@pytest.mark.parametrize("p, percent", [(0.9954, 99), (0.999999, 99), (1.0, 99), (0.985, 98), (0.5, 50),
                                        (0.012, 1), (0.004, 1), (0.0, 1)])
def test_a_model_probability_is_never_shown_as_100_or_0_percent(p: float, percent: int) -> None:
    """0.9954 showed as «высокая — около 100 %»: a model's probability is never a certainty."""
    assert shown_percent(p) == percent


def test_feedback_summary_counts_and_share() -> None:
    rows = [{"characteristic": c, "outcome": o} for c, o in
            [("ch_price", "positive"), ("ch_price", "negative"), ("ch_price", "positive"), ("ch_cloud", "negative")]]
    summary = analyst.feedback_summary(rows, {"ch_price": "Цена"})
    assert [(s["name"], s["count"], s["positive"]) for s in summary] == [("Цена", 3, 2), ("ch_cloud", 1, 0)]
    assert summary[0]["share"] == pytest.approx(2 / 3)


def test_a_hand_edited_manifest_is_shown_as_refused(built: dict[str, Path], tmp_path: Path) -> None:
    root = models_dir_with(tmp_path, built["fixed"], built["fixed"])
    path = root / "2" / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["thresholds"] = [0.0 for _ in data["thresholds"]]
    path.write_text(json.dumps(data), encoding="utf-8")
    rows = {r.number: r for r in analyst.overview(root, served=1).rows}
    assert rows[2].problem is not None and "checksum" in rows[2].problem and rows[2].metrics == {}
    assert rows[1].problem is None


def test_a_version_the_service_refused_is_marked_on_the_analyst_page(built: dict[str, Path], tmp_path: Path) -> None:
    """v2 without its saved_model.pb (manifest intact): the service refused it, yet the page showed it
    with its metrics, no badge and no reason."""
    root = models_dir_with(tmp_path, built["fixed"], built["fixed"])
    (root / "2" / "saved_model" / "saved_model.pb").unlink()
    with serve(settings_for(root), "refused-page") as (client, _):
        assert wait_until(lambda: any(e["version"] == "2" and e["state"] == "END"
                                      for e in client.get("/v1/models/needs_rec").json()["model_version_status"]))
        page = client.get("/analyst").text
    column = page.split('data-version="2"', 1)[1].split("</th>", 1)[0]
    assert "не загружена" in column
    assert "сервис не загрузил эту версию:" in page and "не загружена" not in page.split('data-version="1"')[1][:300]


def test_the_default_report_is_the_served_versions_not_a_refused_candidates(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """/analyst showed the newest version's report by default, even a tampered (refused) candidate's."""
    root = models_dir_with(tmp_path, built["fixed"], built["fixed"])
    (root / "1" / "report.md").write_text("# Отчёт первой\n", encoding="utf-8")
    (root / "2" / "report.md").write_text("# Отчёт подделки\n", encoding="utf-8")
    manifest = root / "2" / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["created_at"] = "2030-01-01T00:00:00+00:00"  # a hand edit: the seal no longer matches
    manifest.write_text(json.dumps(edited))
    with serve(settings_for(root), "pages-refused") as (client, _):
        assert wait_until(lambda: "сейчас обслуживается версия 1" in client.get("/analyst").text)
        page = client.get("/analyst").text
        assert "Отчёт версии 1" in page and "Отчёт первой" in page and "Отчёт подделки" not in page
        assert "refused-report" not in page
        asked = client.get("/analyst", params={"report": "2"}).text
        assert "Отчёт подделки" in asked
        banner = asked.split('class="notice refused-report" role="alert">')[1].split("</p>")[0]
        assert banner.startswith("Версия 2 не обслуживается") and "обслуживается версия 1" in banner, banner
