"""`python -m serving.batch` (contract §3): output columns, rows and ranks; data errors exit 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crm_factory import write_crm
from serving_support import FIXED_PROBABILITIES, VOCABULARY

from needs_rec import dictionaries
from needs_rec.errors import ConfigError
from serving import batch

COLUMNS = ["request_id", "contact_id", "stage", "characteristic", "probability", "selected", "rank"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crm_dir(tmp_path_factory: pytest.TempPathFactory, dictionaries_dir: Path) -> Path:
    return write_crm(tmp_path_factory.mktemp("crm"), dictionaries.load(dictionaries_dir))


def write_requests(path: Path, rows: dict[str, list[str]]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def run(argv: list[str]) -> int:
    return batch.main([str(a) for a in argv])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_characteristic_for_every_request(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path, fmt: str
) -> None:
    requests = write_requests(
        tmp_path / f"requests.{fmt}",
        {"request_id": ["r1", "r2", "r3"], "contact_id": ["c1", "c2", "c3"], "stage": ["lead", " Demo", "deal"]},
    )
    output = tmp_path / f"scores.{fmt}"
    assert run(["--model", built["fixed"].parent, "--data", crm_dir, "--requests", requests, "--output", output]) == 0
    scores = pd.read_parquet(output) if fmt == "parquet" else pd.read_csv(output)
    assert list(scores.columns) == COLUMNS
    assert len(scores) == 3 * len(VOCABULARY)
    assert list(scores["request_id"].unique()) == ["r1", "r2", "r3"]
    assert list(scores["stage"].unique()) == ["lead", "demo", "deal"]
    lead, demo = scores[scores.request_id == "r1"], scores[scores.request_id == "r2"]
    assert list(lead["rank"]) == [1, 2, 3, 4]
    assert list(lead["characteristic"]) == ["ch_price", "ch_integration", "ch_support", "ch_cloud"]
    np.testing.assert_allclose(lead["probability"], sorted(FIXED_PROBABILITIES, reverse=True), atol=1e-6)
    assert list(lead["selected"]) == [True, True, False, False]  # cut 0.5
    # ch_integration has no talking point at 'demo': the exported model gives it probability 0 there
    assert list(demo["characteristic"]) == ["ch_price", "ch_support", "ch_cloud", "ch_integration"]
    np.testing.assert_allclose(demo["probability"], [0.9, 0.4, 0.2, 0.0], atol=1e-6)
    assert list(demo["rank"]) == [1, 2, 3, 4] and list(demo["selected"]) == [True, False, False, False]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_top_k_and_no_request_id(built: dict[str, Path], crm_dir: Path, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "requests.parquet", {"contact_id": ["c4", "c5"], "stage": ["lead", "lead"]})
    output = tmp_path / "scores.parquet"
    argv = ["--model", built["random"], "--data", crm_dir, "--requests", requests, "--output", output, "--top-k", 2]
    assert run(argv) == 0
    scores = pd.read_parquet(output)
    assert list(scores.columns) == COLUMNS[1:]
    assert list(scores["rank"]) == [1, 2, 1, 2] and list(scores["contact_id"]) == ["c4", "c4", "c5", "c5"]
    first = scores[scores.contact_id == "c4"]["probability"].to_numpy()
    assert first[0] >= first[1]
    # selected = passes the version's cut (0.3 for the 'random' version)
    assert list(scores["selected"]) == list(scores["probability"] >= np.float32(0.3))


def test_batch_probabilities_equal_the_service_model(built: dict[str, Path], crm_dir: Path, tmp_path: Path) -> None:
    from crm import files as data_io
    from needs_rec import episodes, features, schema
    from serving.registry import load_version

    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c6", "c7"], "stage": ["demo", "deal"]})
    output = tmp_path / "scores.parquet"
    assert run(["--model", built["random"], "--data", crm_dir, "--requests", requests, "--output", output]) == 0
    scores = pd.read_parquet(output)
    model = load_version(built["random"])
    crm, _ = schema.validate(data_io.read_crm(crm_dir), model.dictionaries)
    keys = pd.DataFrame({"contact_id": ["c6", "c7"], "stage": ["demo", "deal"]})
    keys["occurred_on"] = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    expected = model.loaded.predict(features.frame_to_inputs(episodes.model_inputs(keys, crm)))
    got = scores.pivot(index="contact_id", columns="characteristic", values="probability")[VOCABULARY].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def cli(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.batch", *map(str, argv)],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"contact_id": ["c1", "ghost", "c2"], "stage": ["lead", "lead", "demo"]}, "'ghost' (row(s) 2)"),
        # a 100,000-character id came back whole in the one line
        ({"contact_id": ["c1", "x" * 100_000], "stage": ["lead", "lead"]}, f"'{'x' * 37}...' (row(s) 2)"),
        ({"contact_id": ["c1", "c2"], "stage": ["lead", "closing"]}, "unknown stage(s) 'closing' in row(s) 2"),
        ({"contact_id": ["c1", ""], "stage": ["lead", "demo"]}, "column 'contact_id': 1 empty value(s) in row(s) 2"),
        ({"contact_id": ["c1"]}, "stage"),
    ],
)
def test_data_errors_exit_2_with_one_line(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path, rows: dict[str, list[str]], message: str
) -> None:
    requests = write_requests(tmp_path / "requests.csv", rows)
    output = tmp_path / "scores.parquet"
    result = cli("--model", built["fixed"].parent, "--data", crm_dir, "--requests", requests, "--output", output)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not output.exists() and [p.name for p in tmp_path.iterdir()] == ["requests.csv"]


def test_a_data_error_after_data_warnings_is_still_the_only_line(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """The CRM's warning count was printed before the unknown contact was found: two lines."""
    from crm_factory import write_crm

    from needs_rec import dictionaries

    data = write_crm(tmp_path / "crm", dictionaries.load(dictionaries_dir), unknown_code=True)
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c404"], "stage": ["lead"]})
    result = cli("--model", built["fixed"].parent, "--data", data, "--requests", requests,
                 "--output", tmp_path / "o.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: requests.csv column 'contact_id'")
    ok = write_requests(tmp_path / "ok.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    done = cli("--model", built["fixed"].parent, "--data", data, "--requests", ok, "--output", tmp_path / "o.csv")
    assert done.returncode == 0 and "data warning(s)" in done.stderr, done.stderr


def test_repeated_request_ids_are_scored_with_a_warning_naming_them(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two requests with one request_id were scored silently: joined back by request_id, their rows mix."""
    requests = write_requests(tmp_path / "requests.csv", {"request_id": ["r1", "r2", " r1", "", ""],
                                                          "contact_id": ["c1", "c2", "c3", "c1", "c2"],
                                                          "stage": ["lead"] * 5})
    output = tmp_path / "scores.csv"
    assert run(["--model", built["fixed"].parent, "--data", crm_dir, "--requests", requests, "--output", output]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: requests.csv column 'request_id': 1 value(s) repeated ('r1' in row(s) 1, 3): each request is "
        "scored, but their output rows cannot be told apart by request_id"
    ]  # empty request_ids are no repetition
    assert len(pd.read_csv(output)) == 5 * len(VOCABULARY)
    unique = write_requests(tmp_path / "unique.csv", {"request_id": ["r1", "r2"], "contact_id": ["c1", "c2"],
                                                      "stage": ["lead", "lead"]})
    assert run(["--model", built["fixed"].parent, "--data", crm_dir, "--requests", unique, "--output",
                tmp_path / "u.csv"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_output_that_is_an_input_is_refused_before_anything_is_read(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path
) -> None:
    """--output equal to --requests replaced the requests with their scores (exit 0)."""
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    before = requests.read_bytes()
    for output, flag in ((requests, "--requests"), (crm_dir / "contacts.csv", "--data")):
        result = cli("--model", built["fixed"].parent, "--data", crm_dir, "--requests", requests, "--output", output)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"is the {flag} input" in result.stderr and "write the result to another file" in result.stderr
    assert requests.read_bytes() == before


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_the_output_gets_the_umasks_mode(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path, umask: int, mode: int
) -> None:
    """It was always 0600 (mkstemp's), so a colleague or another service user could not read the scores."""
    import os
    import stat

    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    output = tmp_path / "scores.csv"
    result = subprocess.run(
        [sys.executable, "-m", "serving.batch", "--model", str(built["fixed"].parent), "--data", str(crm_dir),
         "--requests", str(requests), "--output", str(output)],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        preexec_fn=lambda: os.umask(umask),
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(output.stat().st_mode) == mode


def test_bad_output_extension_and_model_path_exit_2(built: dict[str, Path], crm_dir: Path, tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    common = ("--data", crm_dir, "--requests", requests)
    result = cli("--model", built["fixed"], *common, "--output", tmp_path / "o.xlsx")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'.xlsx'" in result.stderr
    result = cli("--model", tmp_path / "none", *common, "--output", tmp_path / "o.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no model version" in result.stderr
    (tmp_path / "scores.csv").mkdir()  # scored everything, then 'Is a directory: /tmp/.scores.csv.x.tmp'
    result = cli("--model", tmp_path / "none", *common, "--output", tmp_path / "scores.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "scores.csv' is a directory; give a file name ending in .csv or .parquet" in result.stderr
    assert ".tmp" not in result.stderr and "no model version" not in result.stderr  # before the model is loaded
    with pytest.raises(ConfigError, match=r"--output '/sys/scores.csv': cannot write in directory '/sys'"):
        batch._check_output(Path("/sys/scores.csv"))  # found before any loading, not as a temp file's error


def test_a_killed_runs_partial_file_is_removed_by_the_next_run(built: dict[str, Path], crm_dir: Path,
                                                              tmp_path: Path) -> None:
    """A SIGKILLed run leaves `.scores.csv.<pid>.*.tmp` (135 MB in a measured run) that nothing removed."""
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".scores.csv.{gone.stdout.strip()}.abc123.tmp"  # that process has ended
    alive = tmp_path / f".scores.csv.{os.getpid()}.def456.tmp"  # a run still writing keeps its file
    for leftover in (dead, alive):
        leftover.write_text("partial")
    result = cli("--model", built["fixed"].parent, "--data", crm_dir, "--requests", requests,
                 "--output", tmp_path / "scores.csv")
    assert result.returncode == 0, result.stderr
    assert not dead.exists() and alive.exists() and (tmp_path / "scores.csv").is_file()
    assert sorted(p.name for p in tmp_path.glob(".scores.csv.*")) == [alive.name]


def test_batch_reads_contacts_from_a_database_like_from_files(
    built: dict[str, Path], crm_dir: Path, database_url: str, tmp_path: Path
) -> None:
    """--data URL: the same scores as the directory; the database needs no outcomes table."""
    from crm_factory import write_crm_database

    from crm.write import write_tables

    dicts = dictionaries.load(built["fixed"] / "dictionaries")
    write_crm_database(database_url, dicts)
    requests = write_requests(tmp_path / "r.csv", {"contact_id": ["c1", "c5"], "stage": ["lead", "deal"]})
    scores = {}
    for name, data in (("files", crm_dir), ("database", database_url)):
        out = tmp_path / f"{name}.parquet"
        assert run(["--model", built["random"].parent, "--data", data, "--requests", requests, "--output", out]) == 0
        scores[name] = pd.read_parquet(out)
    pd.testing.assert_frame_equal(scores["database"], scores["files"])
    contacts_only = database_url.replace("crm.db", "contacts_only.db") if database_url.startswith("sqlite") else None
    if contacts_only:
        frames = {n: pd.read_csv(crm_dir / f"{n}.csv", dtype=str, keep_default_na=False)
                  for n in ("organizations", "contacts")}
        write_tables(contacts_only, frames)
        out = tmp_path / "contacts_only.csv"
        assert run(["--model", built["random"].parent, "--data", contacts_only, "--requests", requests,
                    "--output", out]) == 0
        assert len(pd.read_csv(out)) == 2 * len(VOCABULARY)


def test_batch_unknown_contact_in_a_database_exits_2_naming_it(
    built: dict[str, Path], database_url: str, tmp_path: Path
) -> None:
    from crm_factory import write_crm_database

    write_crm_database(database_url, dictionaries.load(built["fixed"] / "dictionaries"))
    requests = write_requests(tmp_path / "r.csv", {"contact_id": ["c1", "c404"], "stage": ["lead", "deal"]})
    result = cli("--model", built["fixed"].parent, "--data", database_url, "--requests", requests,
                 "--output", tmp_path / "o.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "'c404'" in result.stderr and "contact_id" in result.stderr


def test_a_models_directory_with_labels_is_scored_with_stable(built: dict[str, Path], crm_dir: Path,
                                                              tmp_path: Path) -> None:
    from serving_support import models_dir_with

    from needs_rec import versions

    models = models_dir_with(tmp_path, built["fixed"], built["random"])  # 2 is newest, but a candidate
    versions.write_labels(models, versions.Labels(stable=1, previous=2))
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    output = tmp_path / "scores.csv"
    assert run(["--model", models, "--data", crm_dir, "--requests", requests, "--output", output]) == 0
    scores = pd.read_csv(output)
    got = scores.set_index("characteristic").loc[VOCABULARY, "probability"].to_numpy()
    np.testing.assert_allclose(got, FIXED_PROBABILITIES, atol=1e-6)  # the constant outputs of version 1


@pytest.mark.parametrize("labelled", [False, True])
def test_a_broken_first_version_is_scored_with_the_one_the_service_falls_back_to(
    built: dict[str, Path], crm_dir: Path, tmp_path: Path, labelled: bool
) -> None:
    """Batch failed on a newest (or stable) version whose files do not verify, while the endpoint on the same
    models directory answered with the older one: batch and the endpoint scored with different versions."""
    from serving_support import models_dir_with

    from needs_rec import versions

    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    if labelled:
        versions.write_labels(models, versions.Labels(stable=2, previous=1))
    variables = next((models / "2" / "saved_model" / "variables").glob("variables.data-*"))
    variables.write_bytes(variables.read_bytes() + b"garbage")
    requests = write_requests(tmp_path / "requests.csv", {"contact_id": ["c1"], "stage": ["lead"]})
    result = cli("--model", models, "--data", crm_dir, "--requests", requests, "--output", tmp_path / "scores.csv")
    assert result.returncode == 0, result.stderr
    which = "stable" if labelled else "newest"
    assert (f"warning: the {which} version 2 is missing or its files do not verify; scoring with version 1, "
            "the one the service falls back to") in result.stderr
    scores = pd.read_csv(tmp_path / "scores.csv").set_index("characteristic")
    np.testing.assert_allclose(scores.loc[VOCABULARY, "probability"], FIXED_PROBABILITIES, atol=1e-6)
