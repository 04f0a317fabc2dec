"""Access to the pages and /v1/feedback: credentials, the start-up refusal beyond loopback, cross-site checks."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serving_support import serve, settings_for

from needs_rec.errors import ConfigError
from serving.access import CSRF_COOKIE, CSRF_HEADER, FAILURE_LIMIT, Credentials, FailureThrottle, is_protected
from serving.settings import is_loopback, load_settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-the-tests-0123456789"
BODY = {"stage": "lead", "organization": {"industry": "it"}, "contact": {"position": "ceo"}}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("crm.example.org", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_settings_refuse_a_public_host_without_a_credential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listens beyond loopback.*NEEDS_REC_AUTH_TOKEN or NEEDS_REC_BASIC_AUTH"):
        load_settings(model=tmp_path, host="0.0.0.0")
    assert load_settings(model=tmp_path, host="0.0.0.0", auth_token=TOKEN).credential_required
    assert load_settings(model=tmp_path, host="0.0.0.0", basic_auth="anna:s3cret-pass-of-anna").credential_required
    assert not load_settings(model=tmp_path).credential_required


def test_bad_credentials_are_refused_without_echoing_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(model=tmp_path, basic_auth="no-colon-secret")
    assert "user:password" in str(caught.value) and "no-colon-secret" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(model=tmp_path, auth_token="short-secret")
    assert "at least 16 characters" in str(caught.value) and "short-secret" not in str(caught.value)


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("NEEDS_REC_")}
    return {**keep, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_service_refuses_to_start_beyond_loopback_without_a_credential(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "serving", "--model", str(tmp_path), "--host", "0.0.0.0"],
                            capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "beyond loopback" in lines[0] and "NEEDS_REC_AUTH_TOKEN" in lines[0]


# -- the credential check itself ----------------------------------------------------------------


def test_credentials_accept_bearer_and_basic(tmp_path: Path) -> None:
    both = Credentials(load_settings(model=tmp_path, auth_token=TOKEN, basic_auth="anna:s3cret-pass-of-anna"))
    header = lambda h: h["Authorization"].encode()  # noqa: E731
    assert both.accepts(header(BEARER))
    assert both.accepts(header(basic("anyone", TOKEN)))  # the token works as a Basic password
    assert both.accepts(header(basic("anna", "s3cret-pass-of-anna")))
    assert not both.accepts(header(basic("anna", "wrong")))
    assert not both.accepts(header(basic("boris", "s3cret-pass-of-anna")))
    assert not both.accepts(b"Bearer " + TOKEN.encode() + b"x")
    assert not both.accepts(b"Basic !!!not-base64")
    assert not both.accepts(b"Digest abc")
    assert not both.accepts(None)
    basic_only = Credentials(load_settings(model=tmp_path, basic_auth="anna:s3cret-pass-of-anna"))
    assert not basic_only.accepts(b"Bearer s3cret-pass-of-anna")


def test_the_throttle_counts_wrong_credentials_per_address_in_windows() -> None:
    now = [100.0]
    throttle = FailureThrottle(limit=3, window_s=60.0, clock=lambda: now[0], clients=2)
    for _ in range(2):
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0.0  # under the limit: may try again
    throttle.failed("10.0.0.1")
    now[0] = 130.0
    assert throttle.wait_s("10.0.0.1") == 30.0 and throttle.wait_s("10.0.0.2") == 0.0  # per address
    now[0] = 160.0
    assert throttle.wait_s("10.0.0.1") == 0.0  # the window ended: a fresh count
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0.0
    for address in ("10.0.0.2", "10.0.0.3"):  # a spray of addresses: only `clients` remembered
        throttle.failed(address)
    assert list(throttle._windows) == ["10.0.0.2", "10.0.0.3"]


def test_protected_paths() -> None:
    assert all(is_protected(p) for p in ("/", "/analyst", "/analyst/versions/1/report_gain.png",
                                         "/contacts/card", "/v1/feedback"))
    assert not any(is_protected(p) for p in ("/v1/recommendations", "/healthz", "/readyz", "/metrics",
                                             "/static/needs_rec.js", "/v1/models/needs_rec"))


# -- through the app -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(built: dict[str, Path]) -> Iterator[TestClient]:
    """A service that requires a credential: the token, or Basic anna:s3cret-pass-of-anna."""
    settings = settings_for(built["fixed"].parent, auth_token=TOKEN, basic_auth="anna:s3cret-pass-of-anna")
    with serve(settings, "locked") as (client, _):
        yield client


@pytest.mark.parametrize("path", ["/", "/analyst", "/contacts/card?contact=C1&stage=lead"])
def test_pages_need_the_credential(locked: TestClient, path: str) -> None:
    refused = locked.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})  # a browser
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
    # a page: what the browser shows once its login box is cancelled (it was the API's JSON)
    assert refused.headers["content-type"].startswith("text/html") and "<h1>Нужен вход</h1>" in refused.text
    assert "credential is required" in refused.text
    assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]  # a login page is not framed
    program = locked.get(path, headers={"Accept": "*/*"})  # curl, a script: the JSON answer, as on every error
    assert program.status_code == 401 and "credential is required" in program.json()["error"]
    wrong = locked.get(path, headers=basic("anna", "nope"))
    assert wrong.status_code == 401 and "wrong credential" in wrong.text
    for headers in (BEARER, basic("anna", "s3cret-pass-of-anna"), basic("x", TOKEN)):
        answer = locked.get(path, headers=headers)
        assert answer.status_code != 401, (path, headers, answer.text[:200])
    assert locked.get("/analyst", headers=BEARER).status_code == 200


def test_guessing_the_credential_is_throttled_per_address(built: dict[str, Path]) -> None:
    """A script guessing the Basic password got a 401 per guess, as fast as it could send them; now
    FAILURE_LIMIT wrong guesses in a window make every request from that address a 429 until it ends
    (a right one too: the answer must not tell the script it guessed), for the pages and the lookups."""
    settings = settings_for(built["fixed"].parent, basic_auth="anna:s3cret-pass-of-anna")
    with serve(settings, "guessed") as (client, log):
        assert client.get("/analyst").status_code == 401  # no credential yet: a browser's first request
        for guess in range(FAILURE_LIMIT):
            assert client.get("/analyst", headers=basic("anna", f"guess-{guess}")).status_code == 401
        refused = client.get("/analyst", headers=basic("anna", "s3cret-pass-of-anna"))
        assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"].startswith("too many wrong credentials from this address: try again in")
        lookup = client.post("/v1/recommendations", json={"contact_id": "c1", "stage": "lead"},
                             headers=basic("anna", "s3cret-pass-of-anna"))
        assert lookup.status_code == 429 and "Retry-After" in lookup.headers
        assert client.post("/v1/recommendations", json=BODY).status_code == 200  # the open API is not throttled
        assert '"status": 429' in log.getvalue() or '"status":429' in log.getvalue()
        assert "s3cret" not in log.getvalue() and "guess-" not in log.getvalue()


def test_json_api_stays_open(locked: TestClient) -> None:
    assert locked.post("/v1/recommendations", json=BODY).status_code == 200
    assert locked.get("/healthz").status_code == 200
    assert locked.get("/static/needs_rec.css").status_code == 200


def test_feedback_needs_the_credential(locked: TestClient) -> None:
    refused = locked.post("/v1/feedback", json={})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert "credential is required" in refused.json()["error"]  # the JSON API keeps its JSON answer
    # a program with the token passes the access check (whatever the route then says about the body)
    passed = locked.post("/v1/feedback", json={}, headers=BEARER)
    assert passed.status_code not in (401, 403)


def _csrf(client: TestClient, headers: dict[str, str]) -> str:
    """Open a page (which sets the CSRF cookie) and return the token it carries."""
    page = client.get("/analyst", headers=headers)
    assert page.status_code == 200
    token = page.cookies.get(CSRF_COOKIE) or client.cookies.get(CSRF_COOKIE)
    assert token and f'<meta name="csrf-token" content="{token}">' in page.text
    return str(token)


def _post(client: TestClient, headers: dict[str, str], **extra: Any) -> Any:
    return client.post("/v1/feedback", json={}, headers={**headers, **extra})


def test_cross_site_posts_are_refused(built: dict[str, Path]) -> None:
    settings = settings_for(built["fixed"].parent, basic_auth="anna:s3cret-pass-of-anna")
    with serve(settings, "csrf") as (client, _):
        login = basic("anna", "s3cret-pass-of-anna")
        token = _csrf(client, login)
        host = {"Origin": "http://localhost"}
        ok = _post(client, login, **host, **{CSRF_HEADER: token})
        assert ok.status_code not in (401, 403), ok.text
        foreign = _post(client, login, Origin="http://evil.example", **{CSRF_HEADER: token})
        assert foreign.status_code == 403 and "Origin" in foreign.json()["error"]
        assert _post(client, login, Origin="null", **{CSRF_HEADER: token}).status_code == 403
        cross = _post(client, login, **{"Sec-Fetch-Site": "cross-site", CSRF_HEADER: token})
        assert cross.status_code == 403 and "Sec-Fetch-Site" in cross.json()["error"]
        missing = _post(client, login, **host)
        assert missing.status_code == 403 and "CSRF token" in missing.json()["error"]
        stale = _post(client, login, **host, **{CSRF_HEADER: token[::-1]})
        assert stale.status_code == 403
        client.cookies.clear()  # a Basic-auth browser without the page's cookie cannot post either
        assert _post(client, login, **{CSRF_HEADER: token}).status_code == 403


def test_loopback_without_credential_still_checks_cross_site(app_page_client: TestClient) -> None:
    client = app_page_client
    assert client.get("/analyst").status_code == 200  # open on loopback when no credential is configured
    assert _post(client, {}, Origin="http://evil.example").status_code == 403
    token = _csrf(client, {})
    assert _post(client, {}, Origin="http://localhost", **{CSRF_HEADER: token}).status_code not in (401, 403)
    client.cookies.clear()
    # a program on this machine (no Origin, no cookie) posts feedback with no CSRF token
    assert _post(client, {}).status_code not in (401, 403)


@pytest.fixture
def app_page_client(built: dict[str, Path]) -> Iterator[TestClient]:
    with serve(settings_for(built["fixed"].parent), "open") as (client, _):
        yield client


# -- the Host header: DNS rebinding ---------------------------------------------------------


def test_without_a_credential_only_loopback_host_names_are_answered(built: dict[str, Path]) -> None:
    """A web page whose name an attacker makes resolve to 127.0.0.1 read the pages (names, the CSRF token)
    and posted feedback as a same-origin script: nothing looked at the Host header it sends."""
    with serve(settings_for(built["fixed"].parent), "hosts") as (client, _):
        for host in ("localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST:80"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
        foreign = {"Host": "attacker.example:8080"}
        for answer in (client.get("/", headers=foreign), client.get("/analyst", headers=foreign),
                       client.post("/v1/recommendations", json=BODY, headers=foreign),
                       client.get("/v1/models/needs_rec/metadata", headers=foreign)):
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == (
                "header 'Host': 'attacker.example:8080' is not a name of this service; "
                "allowed: 127.0.0.1, [::1], localhost (NEEDS_REC_ALLOWED_HOSTS adds names)")
        assert client.get("/", headers={"Host": "127.0.0.1.attacker.example"}).status_code == 400


def test_a_credential_or_allowed_hosts_widen_the_host_names(locked: TestClient, built: dict[str, Path]) -> None:
    assert locked.get("/healthz", headers={"Host": "needs-rec.firm.internal:8080"}).status_code == 200
    settings = settings_for(built["fixed"].parent, allowed_hosts="needs-rec.firm.internal, localhost")
    with serve(settings, "named") as (client, _):
        assert client.get("/healthz", headers={"Host": "needs-rec.firm.internal"}).status_code == 200
        refused = client.get("/healthz", headers={"Host": "127.0.0.1"})
        assert refused.status_code == 400 and "allowed: localhost, needs-rec.firm.internal" in refused.json()["error"]
    assert load_settings(model=built["fixed"].parent, allowed_hosts="*").host_names is None
    with pytest.raises(ConfigError, match=r"allowed_hosts .*none empty"):
        load_settings(model=built["fixed"].parent, allowed_hosts="a,,b")


def test_a_basic_auth_password_must_be_as_long_as_a_token(tmp_path: Path) -> None:
    """'admin:x' started a service beyond loopback whose password 62 guesses found."""
    with pytest.raises(ConfigError) as caught:
        load_settings(model=tmp_path, host="0.0.0.0", basic_auth="admin:x")
    assert "the password needs at least 16 characters" in str(caught.value) and "admin:x" not in str(caught.value)
