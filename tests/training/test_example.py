"""training.example: the card printed after a fit is the one the service would answer with."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from model_factory import build_version

from needs_rec import dictionaries
from training import sample
from training.example import render_example

REPO = Path(__file__).resolve().parents[2]
DICTIONARIES = REPO / "dictionaries"


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = sample.generate(dictionaries.load(DICTIONARIES), n_orgs=40, seed=2)
    return sample.write(data, tmp_path_factory.mktemp("crm") / "data", oracle=False)


@pytest.mark.parametrize(("high", "top_k", "min_selected"), [
    (67, None, 0),   # every offered characteristic passes, no cap: the example hard-capped at 5
    (2, None, 12),   # two pass, the floor asks for 12: the example ignored min_selected
    (67, 7, 1),      # the manifest's cap
])
def test_the_example_shows_exactly_the_services_selection(crm: Path, tmp_path: Path, high: int,
                                                          top_k: int | None, min_selected: int) -> None:
    from serving.registry import load_version

    size = len(dictionaries.load(DICTIONARIES).characteristics)
    probabilities = np.linspace(0.95, 0.6, size)
    if high < size:  # the rest fail their cut of 0.5
        probabilities[high:] = np.linspace(0.3, 0.05, size - high)
    version = build_version(tmp_path / "models", DICTIONARIES, probabilities=list(probabilities), thresholds=0.5,
                            top_k=top_k, min_selected=min_selected)
    text = render_example(version, crm, DICTIONARIES)
    stage = re.search(r"stage .* \((\w+)\)\n", text).group(1)
    shown = re.findall(r"^  \d+\. .* \[(\w+)\] p=", text, flags=re.MULTILINE)
    model = load_version(version)
    expected = [model.vocabulary[j] for j in model.selection(np.asarray(probabilities, dtype=np.float32), stage)]
    assert shown == expected
    assert len(shown) > 5 or top_k is not None
    assert f"{len(shown)} shown" in text
