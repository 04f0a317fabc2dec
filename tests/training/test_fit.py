"""training.fit: determinism, export → fresh-process reload, no personal data, atomic export, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from needs_rec import artifact, dictionaries, features
from needs_rec.errors import ModelError
from training import fit as fit_mod
from training import sample

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = """
network: {hidden_units: [16], dropout: 0.1}
training: {batch_size: 128, max_epochs: 3, patience: 2}
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crm(tmp_path_factory) -> Path:
    """A small synthetic CRM (with personal-data columns) from the repo's dictionaries."""
    directory = tmp_path_factory.mktemp("crm") / "data"
    data = sample.generate(dictionaries.load(REPO / "dictionaries"), n_orgs=150, seed=5)
    sample.write(data, directory)
    return directory


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY_CONFIG, encoding="utf-8")
    return path


def _args(crm: Path, config: Path, output: Path, seed: int = 3) -> list[str]:
    return ["--data", str(crm), "--dictionaries", str(REPO / "dictionaries"), "--output", str(output),
            "--config", str(config), "--seed", str(seed), "--quiet"]


@pytest.fixture(scope="module")
def fitted(crm, config_file, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    return fit_mod.fit(fit_mod.parse_args(_args(crm, config_file, models))), models


def _inputs(crm: Path) -> pd.DataFrame:
    contacts = pd.read_csv(crm / "contacts.csv", dtype=str, keep_default_na=False).head(40)
    orgs = pd.read_csv(crm / "organizations.csv", dtype=str, keep_default_na=False)
    frame = contacts.merge(orgs, on="org_id", how="left")
    frame["stage"] = "proposal"
    frame["occurred_on"] = "2025-06-01"
    return frame


def test_version_directory_holds_saved_model_manifest_dictionaries_and_report(fitted):
    result, models = fitted
    assert artifact.list_versions(models) == [1]
    assert sorted(p.name for p in models.iterdir()) == ["1"]  # nothing half-written beside it
    version = result.version_dir
    assert (version / "saved_model" / "saved_model.pb").is_file()
    assert (version / "report.md").is_file()
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    vocab = dictionaries.load(REPO / "dictionaries").characteristic_codes
    assert manifest["vocabulary"] == vocab
    assert len(manifest["thresholds"]) == len(vocab)
    assert manifest["version"] == 1
    assert "network" in manifest["metrics"]["methods"]
    assert set(manifest["libraries"]) >= {"tensorflow", "keras", "numpy"}
    assert artifact.verify(version)["version"] == 1


def test_the_wide_path_goes_through_the_dictionaries_catalogue(crm, config_file, tmp_path):
    result = fit_mod.fit(fit_mod.parse_args([*_args(crm, config_file, tmp_path), "--no-search", "--no-baselines"]))
    assert result.manifest["config"]["network"]["wide_path"] == "catalogue"
    links = dictionaries.load(REPO / "dictionaries").catalogue_links()
    np.testing.assert_array_equal(result.network.get_layer("wide_links").kernel.numpy(), links.T)


def test_version_carries_audience_gain_and_a_verified_organization_index(fitted, tmp_path):
    from needs_rec import similar

    result, _ = fitted
    manifest = json.loads((result.version_dir / "manifest.json").read_text(encoding="utf-8"))
    gain = manifest["audience"]
    assert gain["shares"] == [0.05, 0.1, 0.2] and gain["audiences"] > 0
    assert set(gain["methods"]) >= {"network", "group_popularity", "logistic"}
    assert gain["methods"]["popularity"]["gain"] == [0.05, 0.1, 0.2]  # one score per audience: a random order
    summary = manifest["similar"]
    assert summary["kind"] in similar.KINDS and set(summary["lift_test"]) == set(similar.KINDS)
    side = result.version_dir / similar.SIDE_DIR
    assert sorted(manifest["side_files"]) == sorted(f"{similar.SIDE_DIR}/{p.name}" for p in side.iterdir())
    index = similar.OrganizationIndex.read(side, manifest["vocabulary"], summary["kind"])
    assert len(index) == summary["organizations"]
    assert "## Where it worked before" in (result.version_dir / "report.md").read_text(encoding="utf-8")
    # a changed side file is refused like a changed SavedModel file
    copy = tmp_path / "1"
    shutil.copytree(result.version_dir, copy)
    (copy / similar.SIDE_DIR / similar.EMBEDDINGS_FILE).write_bytes(b"changed")
    with pytest.raises(ModelError, match=r"organizations/embeddings\.npy"):
        artifact.verify(copy)


def test_export_reloads_in_a_fresh_process_with_the_same_probabilities(fitted, crm, tmp_path):
    result, _ = fitted
    frame = _inputs(crm)
    in_memory = result.network.predict(result.encoder.encode_frame(frame), verbose=0)
    frame.to_parquet(tmp_path / "inputs.parquet")
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from needs_rec import artifact, features\n"
        "m = artifact.load(sys.argv[1])\n"
        "p = m.predict(features.frame_to_inputs(pd.read_parquet(sys.argv[2])))\n"
        "np.save(sys.argv[3], p)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(result.version_dir), str(tmp_path / "inputs.parquet"),
         str(tmp_path / "p.npy")],
        check=True, cwd=REPO, capture_output=True,
    )
    reloaded = np.load(tmp_path / "p.npy")
    assert reloaded.shape == in_memory.shape
    np.testing.assert_allclose(reloaded, in_memory, rtol=1e-5, atol=1e-6)


def test_same_data_config_and_seed_give_identical_probabilities(fitted, crm, config_file, tmp_path):
    first, _ = fitted
    second = fit_mod.fit(fit_mod.parse_args(_args(crm, config_file, tmp_path / "models")))
    frame = features.frame_to_inputs(_inputs(crm))
    a = artifact.load(first.version_dir).predict(frame)
    b = artifact.load(second.version_dir).predict(frame)
    np.testing.assert_array_equal(a, b)
    assert first.manifest["thresholds"] == second.manifest["thresholds"]
    assert first.manifest["metrics"] == second.manifest["metrics"]


def test_no_personal_data_anywhere_in_the_version_directory(fitted, crm):
    result, _ = fitted
    contacts = pd.read_csv(crm / "contacts.csv", dtype=str, keep_default_na=False)
    orgs = pd.read_csv(crm / "organizations.csv", dtype=str, keep_default_na=False)
    secrets = set()
    for frame, columns in ((contacts, ["full_name", "email", "phone"]), (orgs, ["name", "inn"])):
        for column in columns:
            secrets.update(v for v in frame[column] if len(v) >= 6)
    assert len(secrets) > 100  # the sample really carries personal data
    blobs = [p.read_bytes() for p in result.version_dir.rglob("*") if p.is_file()]
    leaked = [s for s in secrets if any(s.encode("utf-8") in blob for blob in blobs)]
    assert leaked == []


def test_failure_mid_export_leaves_no_version_directory(crm, config_file, tmp_path, monkeypatch):
    from training import report

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the report")

    monkeypatch.setattr(report, "write_report", broken)
    models = tmp_path / "models"
    with pytest.raises(RuntimeError, match="disk full"):
        fit_mod.fit(fit_mod.parse_args([*_args(crm, config_file, models), "--no-baselines"]))
    assert list(models.iterdir()) == []


def test_cli_data_error_exits_2_with_one_line(tmp_path):
    (tmp_path / "crm").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "training.fit", "--data", str(tmp_path / "crm"), "--output", str(tmp_path / "m")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "organizations" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists() or list((tmp_path / "m").iterdir()) == []


def test_cli_shows_no_tensorflow_start_up_noise(crm, config_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "GLOG", "GRPC"))}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "training.fit", *_args(crm, config_file, tmp_path / "m")[:-1]],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for noise in ("absl::InitializeLog", "I0000", "E0000", "W0000", "oneDNN", "cpu_feature_guard", "NodeDef"):
        assert noise not in proc.stderr and noise not in proc.stdout, proc.stderr[-2000:]
    assert artifact.list_versions(tmp_path / "m") == [1]


def test_manifest_config_holds_the_seed_the_run_used(fitted):
    """`--seed 3` over a config without one (seed 0): refitting from the stored config must use 3 too."""
    result, _ = fitted
    manifest = json.loads((result.version_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 3
    assert manifest["config"]["seed"] == 3


def test_stored_config_takes_the_flag_seed_over_the_config_files(tmp_path):
    """A config file's `seed: 5` with `--seed 7`: 7 trains, so 7 is what the manifest's config says."""
    from needs_rec.config import load_config
    from training.train import config_as_used

    path = tmp_path / "seeded.yaml"
    path.write_text("seed: 5\n", encoding="utf-8")
    cfg = load_config(path)
    assert config_as_used(cfg, 7)["seed"] == 7
    assert config_as_used(cfg, 7) == {**cfg.to_dict(), "seed": 7}


def test_the_report_says_how_many_outcome_rows_came_from_feedback(crm, config_file, tmp_path):
    """docs/serving.md: the validation report says how many rows came from feedback; report.md's data
    summary did not (only `training.validate`'s line and the manifest's notes had it)."""
    import crm as crm_source

    data = tmp_path / "crm"
    shutil.copytree(crm, data)
    outcomes = pd.read_csv(data / "outcomes.csv", dtype=str, keep_default_na=False)
    first = outcomes.iloc[0]
    same_episode = outcomes[(outcomes["contact_id"] == first["contact_id"]) & (outcomes["stage"] == first["stage"])
                            & (outcomes["occurred_on"] == first["occurred_on"])]
    vocabulary = dictionaries.load(REPO / "dictionaries").characteristic_codes
    new = next(code for code in vocabulary if code not in set(same_episode["characteristic"]))
    with crm_source.open_source(data) as source:
        for feedback_id, characteristic, outcome in (("fb-new", new, "positive"),
                                                     ("fb-again", first["characteristic"], first["outcome"])):
            source.add_feedback(crm_source.FeedbackEvent(feedback_id, first["contact_id"], first["stage"],
                                                         characteristic, outcome, first["occurred_on"]))
    result = fit_mod.fit(fit_mod.parse_args([*_args(data, config_file, tmp_path / "models"), "--no-baselines"]))
    notes = result.manifest["data"]["validation"]["notes"]
    assert notes["outcome_rows_from_feedback"] == 1 and notes["feedback_rows_already_counted"] == 1
    report = (result.version_dir / "report.md").read_text(encoding="utf-8")
    summary = report[report.index("## Data summary"):]
    assert "| outcome rows from feedback | 1 |" in summary
    assert "| feedback rows already counted | 1 |" in summary
