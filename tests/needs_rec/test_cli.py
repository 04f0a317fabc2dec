"""needs_rec.cli: every command's usage errors, `--seed` included, are one line and exit 2 before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from needs_rec.cli import MAX_SEED

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["training.sample", "training.fit", "training.retrain", "training.validate",
                                    "serving.batch"])
@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "x"])
def test_a_bad_seed_or_flag_is_one_line_before_any_work(tmp_path: Path, module: str, seed: str) -> None:
    """fit and retrain took -1 or 2**66 and failed with NumPy's traceback once training had started;
    validate and batch printed argparse's usage line as well."""
    takes_seed = module in ("training.sample", "training.fit", "training.retrain")
    args = ["--seed", seed] if takes_seed else ["--no-such-flag", seed]
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert f"see python -m {module} --help" in done.stderr
    if takes_seed:
        assert f"must be a whole number from 0 to {MAX_SEED}" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_sigterm_ends_a_command_through_its_cleanup_like_ctrl_c(tmp_path: Path) -> None:
    """kill, timeout and systemd send SIGTERM: a batch run died at once (-15, no word) and left its partial
    temporary output, where Ctrl-C removed it and said 'interrupted'."""
    partial = tmp_path / ".scores.csv.tmp"
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from needs_rec.cli import run_cli\n"
        "def main(argv):\n"
        f"    tmp = Path({str(partial)!r})\n"
        "    tmp.write_text('partial')\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "    except BaseException:\n"
        "        tmp.unlink()\n"
        "        raise\n"
        "run_cli(main)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 143 and result.stderr == "error: terminated\n", (result.returncode, result.stderr)
    assert not partial.exists()


@pytest.mark.parametrize(("module", "flag"), [("training.fit", "--output"), ("training.retrain", "--models")])
def test_an_unwritable_models_directory_is_one_line_before_any_training(immutable_dir: Path, module: str,
                                                                      flag: str) -> None:
    """fit ran every step and then failed naming its internal `.building-*` path; now the models
    directory is probed first (a real write, as root passes os.access) and the line names it."""
    done = subprocess.run([sys.executable, "-m", module, flag, str(immutable_dir), "--data", "/nonexistent/crm"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {'models directory' if flag == '--output' else flag} "
                                  f"'{immutable_dir}' is not writable"), done.stderr
    assert ".building-" not in done.stderr and "[1/" not in done.stdout


def run_main(body: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose `main` is the one line `body` (errno and os imported) under `run_cli`."""
    script = f"import errno, os\nfrom needs_rec.cli import run_cli\ndef main(argv):\n    {body}\nrun_cli(main)\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("code", "hint"), [("ENOSPC", "free disk space on its file system, then"),
                                            ("EROFS", "mount it read-write or give a directory on a writable")])
def test_a_full_or_read_only_disk_is_one_line_that_says_what_to_do(tmp_path: Path, code: str, hint: str) -> None:
    """`serving.promote` on a full disk or a read-only mount of the models directory died with
    Python's traceback (exit 1) at the lock file: only FileNotFoundError/PermissionError were a user's line."""
    done = run_main(f"raise OSError(errno.{code}, os.strerror(errno.{code}), '/srv/models/.labels.lock')")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and "/srv/models/.labels.lock" in done.stderr and hint in done.stderr


def test_any_other_os_error_keeps_its_traceback(tmp_path: Path) -> None:
    """Only the disk's refusals are an operator's line; an unexpected OS error is a bug to report."""
    done = run_main("raise OSError(errno.EIO, os.strerror(errno.EIO))")
    assert done.returncode == 1 and "Traceback" in done.stderr


@pytest.mark.parametrize("lines", [1, 100_000])
def test_a_reader_that_stops_early_ends_the_command_quietly(lines: int) -> None:
    """`python -m training.validate --data D | head` ended in a BrokenPipeError traceback: a reader
    that has seen enough (head, less quit) is not an error to report, on a long report or a short
    one (where the pipe breaks only at the final flush)."""
    script = (
        "import time\n"
        "from needs_rec.cli import run_cli\n"
        "def main(argv):\n"
        "    time.sleep(0.5)\n"
        f"    for i in range({lines}):\n"
        "        print('line', i)\n"
        "run_cli(main)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone before the command writes
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=60)
    assert code == 141, stderr  # 128 + SIGPIPE, what a shell reports for `cmd | head`
    assert stderr == ""


def test_a_command_started_with_stdout_closed_still_runs() -> None:
    """Python sets sys.stdout to None when fd 1 is closed (`cmd >&-`); print() then writes nothing and the
    command must still end with its own code."""
    script = "from needs_rec.cli import run_cli\nrun_cli(lambda argv: print('done') or 3)\n"
    done = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 3 and done.stderr == "", done.stderr
