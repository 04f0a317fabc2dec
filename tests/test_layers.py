"""The package layers: `needs_rec` is the pure library, `crm` the CRM source seam, `serving` the service and its
CLIs; neither `serving` nor `crm` nor `needs_rec` imports `training` (the design's one owner per capability:
ops can run the service without the training programs, and a change to a training CLI cannot break serving)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SERVING_MODULES = ["serving.__main__", "serving.app", "serving.batch", "serving.audience", "serving.promote"]


@pytest.mark.parametrize("module", [*SERVING_MODULES, "crm.sql", "crm.files", "crm.write", "needs_rec.cli"])
def test_module_loads_without_importing_training(module: str) -> None:
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"{module} imports {result.stdout.strip()}"
