"""`python -m serving.audience`: the campaign list equals the in-process ranking; bad input exits 2 with one line."""

from __future__ import annotations

import datetime as dt
import os
import stat

import numpy as np
import pandas as pd
import pytest
from crm_factory import write_crm
from model_factory import build_version

from crm import files as data_io
from needs_rec import artifact, audience, schema
from needs_rec.cli import run_cli
from serving import audience as audience_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from crm_factory import write_dictionaries

    from needs_rec import dictionaries

    root = tmp_path_factory.mktemp("audience")
    dicts_dir = write_dictionaries(root / "dictionaries")
    dicts = dictionaries.load(dicts_dir)
    data = write_crm(root / "crm", dicts)
    version = build_version(root / "models", dicts_dir, hidden=(8,), seed=3)
    return root, data, version, dicts


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(audience_cli.main, argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_campaign_list_is_the_ranked_audience(setup, capsys, suffix):
    root, data, version, dicts = setup
    output = root / f"list{suffix}"
    code, err = run(["--model", str(root / "models"), "--data", str(data), "--characteristic", "ch_price",
                     "--stage", "lead", "--limit", "4", "--output", str(output)], capsys)
    assert code == 0, err
    written = pd.read_csv(output, dtype={"contact_id": str}) if suffix == ".csv" else pd.read_parquet(output)
    assert list(written.columns) == ["contact_id", "org_id", "probability", "rank"]

    crm, _ = schema.validate(data_io.read_crm(data), dicts)
    population = audience.Population.from_crm(crm, dicts)
    model = artifact.load(version)
    today = dt.datetime.now(dt.UTC).date()
    expected = audience.rank(population, audience.score_stage(model.predict, population, crm, "lead", today),
                             "ch_price", "lead", limit=4).to_frame(population)
    assert list(written["contact_id"]) == list(expected["contact_id"])
    assert list(written["rank"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(written["probability"], expected["probability"], rtol=1e-6)
    # owners of ch_price's product ("crm") are not in a "lead" audience
    owners = set(crm.organizations.loc[crm.organizations["products_owned"].str.contains("crm"), "org_id"])
    assert owners and not owners & set(written["org_id"])
    assert "eligible contact(s)" in err
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--characteristic", "nope"], "error: field 'characteristic': unknown characteristic 'nope'"),
        (["--stage", "nowhere"], "error: field 'stage': unknown stage 'nowhere'; allowed: lead, demo, deal"),
        (["--characteristic", "ch_integration", "--stage", "demo"], "has no talking point at stage 'demo'"),
        (["--limit", "0"], "error: --limit must be a whole number >= 1, got 0"),
        (["--exclude-presented-days", "0"],
         "error: --exclude-presented-days: must be a whole number of days from 1 to 36500"),
        (["--output", "list.txt"], "unsupported extension '.txt'; use .csv or .parquet"),
    ],
)
def test_bad_input_exits_2_with_one_line(setup, capsys, flags, message):
    root, data, _, _ = setup
    base = {"--model": str(root / "models"), "--data": str(data), "--characteristic": "ch_price", "--stage": "lead",
            "--output": str(root / "out.csv")}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value if flag != "--output" else str(root / value)
    code, err = run([x for pair in base.items() for x in pair], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not (root / "out.csv").exists()


def test_a_filter_code_outside_the_dictionary_is_a_warning(setup, capsys):
    root, data, _, _ = setup
    output = root / "filtered.csv"
    code, err = run(["--model", str(root / "models"), "--data", str(data), "--characteristic", "ch_price",
                     "--stage", "lead", "--industry", "IT ", "--region", "Moscow", "--output", str(output)], capsys)
    assert code == 0, err
    assert "warning: --region: 'Moscow' is not a code of regions.yaml" in err
    assert "industry" not in err.split("ranked")[0]  # 'IT ' is the dictionary's 'it'
    assert "ranked 0 eligible contact(s)" in err


def test_a_data_error_after_data_warnings_is_still_the_only_line(setup, capsys, tmp_path):
    """The warning count was printed before the characteristic was checked: two lines for one error."""
    from crm_factory import write_crm

    root, _, _, dicts = setup
    data = write_crm(tmp_path / "crm", dicts, unknown_code=True)
    code, err = run(["--model", str(root / "models"), "--data", str(data), "--characteristic", "nope",
                     "--stage", "lead", "--output", str(tmp_path / "out.csv")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: field 'characteristic'"), err
    code, err = run(["--model", str(root / "models"), "--data", str(data), "--characteristic", "ch_price",
                     "--stage", "lead", "--output", str(tmp_path / "out.csv")], capsys)
    assert code == 0 and "data warning(s)" in err  # a run that goes ahead still says so
