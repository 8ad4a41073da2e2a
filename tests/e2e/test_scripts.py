"""The README's two commands, ./run and ./test, and their shared set-up scripts/ensure-venv.

Each test runs the real scripts in a scratch copy of the repository whose Python is a
small shim: the shim records every call and answers `-m pip` / `-m venv` itself, so no test
installs anything and the file runs in a few seconds. The last test checks this
checkout's own .venv when ./test (or ./run) set it up, as in CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import HANG_TIMEOUT, REPO_ROOT

SCRIPTS = ("run", "test", "scripts/ensure-venv", ".ci/run")
# What the set-up runs besides Python; the scratch PATH holds only these (and the shims),
# so no Python of this machine is found by accident.
TOOLS = (
    "sh",
    "bash",
    "dirname",
    "cat",
    "mkdir",
    "rm",
    "df",
    "awk",
    "sed",
    "grep",
    "head",
    "tail",
    "cksum",
    "flock",
    "cp",
)

# A venv's python: records its arguments, answers pip (FAKE_PIP_RC, FAKE_PIP_OUTPUT), and
# runs everything else with the real interpreter.
VENV_PYTHON = f"""#!/bin/sh
printf '%s\\n' "$*" >> "$SHIM_LOG"
if [ "$1" = -m ] && [ "$2" = pip ]; then
    [ -z "${{FAKE_PIP_OUTPUT:-}}" ] || printf '%s\\n' "$FAKE_PIP_OUTPUT"
    exit "${{FAKE_PIP_RC:-0}}"
fi
exec {sys.executable} "$@"
"""

# A system python3 of version FAKE_VERSION; `-m venv DIR` makes DIR a venv with the shim
# above (or fails like Debian without python3-venv when FAKE_NO_VENV is set).
SYSTEM_PYTHON = """#!/bin/sh
printf 'python3 %s\\n' "$*" >> "$SHIM_LOG"
if [ "$1" = -m ] && [ "$2" = venv ]; then
    if [ -n "${FAKE_NO_VENV:-}" ]; then
        echo "The virtual environment was not created successfully because ensurepip is not"
        echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
        echo "package using the following command."
        exit 1
    fi
    mkdir -p "$3/bin" && cp "$FAKE_VENV_PYTHON" "$3/bin/python" && exit 0
fi
echo "$FAKE_VERSION"
"""

OFFLINE_PIP = """Looking in links: /nowhere
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<HTTPSConnection>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/torch/
ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)
ERROR: No matching distribution found for torch==2.13.0"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def repo(tmp_path):
    """A scratch copy of the repository's scripts, plus shims; returns a runner."""
    root = tmp_path / "repo"
    for name in SCRIPTS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    shutil.copy2(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "tests").mkdir()
    _executable(root / "train.py", "import sys\nprint('TRAIN', sys.argv[1:])\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    shims = tmp_path / "shims"
    shims.mkdir()
    venv_python = _executable(shims / "venv-python", VENV_PYTHON)
    log = tmp_path / "calls.log"
    log.touch()

    class Repo:
        path = root
        calls = log

        def make_venv(self):
            (root / ".venv" / "bin").mkdir(parents=True)
            shutil.copy2(venv_python, root / ".venv" / "bin" / "python")

        def system_python(self, version: str):
            _executable(bin_dir / "python3", SYSTEM_PYTHON)
            self.env["FAKE_VERSION"] = version

        def __init__(self):
            self.env = {
                "PATH": str(bin_dir),
                "HOME": str(tmp_path),
                "SHIM_LOG": str(log),
                "FAKE_VENV_PYTHON": str(venv_python),
                "TMPDIR": str(tmp_path),
            }

        def __call__(self, *cmd: str, **env: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(root / cmd[0]), *cmd[1:]],
                cwd=root,
                env={**self.env, **env},
                capture_output=True,
                text=True,
                timeout=HANG_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )

        def pip_calls(self) -> list[str]:
            return [line for line in log.read_text().splitlines() if line.startswith("-m pip")]

    return Repo()


def one_error(result: subprocess.CompletedProcess) -> str:
    """The failure is exit code 1 and exactly one 'error:' line on stderr; returns it."""
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    return errors[0]


def test_scripts_are_executable_in_git():
    listed = subprocess.run(["git", "ls-files", "-s", *SCRIPTS], cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout")
    modes = {line.split("\t")[1]: line.split()[0] for line in listed.stdout.splitlines()}
    for name in ("run", "test", "scripts/ensure-venv"):
        assert modes.get(name) == "100755", f"{name} must be committed executable (git update-index --chmod=+x)"
    assert "exec ./test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_fresh_setup_creates_venv_installs_once_and_second_run_skips_pip(repo):
    repo.system_python("3.11.7")
    first = repo("scripts/ensure-venv")
    assert first.returncode == 0, first.stderr
    assert "creating the virtual environment" in first.stderr and "installing" in first.stderr
    assert repo.pip_calls() == ["-m pip install --disable-pip-version-check -e .[test]"]
    assert (repo.path / ".venv" / ".exptrain-installed").exists()

    second = repo("scripts/ensure-venv")
    assert second.returncode == 0, second.stderr
    assert "dependencies up to date" in second.stderr and "installing" not in second.stderr
    assert len(repo.pip_calls()) == 1, "the second run reinstalled"
    assert repo("scripts/ensure-venv", "--check").returncode == 0

    # A changed pyproject.toml (new pins) installs again, once.
    with open(repo.path / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert repo("scripts/ensure-venv", "--check").returncode == 1
    assert repo("scripts/ensure-venv").returncode == 0 and len(repo.pip_calls()) == 2
    assert repo("scripts/ensure-venv").returncode == 0 and len(repo.pip_calls()) == 2


def test_run_trains_the_quick_start_or_passes_arguments_to_train_py(repo):
    repo.make_venv()
    quick = repo("run")
    assert quick.returncode == 0, quick.stderr
    assert "TRAIN ['--dataset', 'mnist-sample', '--epochs', '10']" in quick.stdout
    resumed = repo("run", "--resume", "exp1")
    assert "TRAIN ['--resume', 'exp1']" in resumed.stdout
    assert len(repo.pip_calls()) == 1  # installed by the first call only


def test_test_runs_pytest_and_keeps_its_exit_code_also_through_ci(repo):
    repo.make_venv()
    (repo.path / "tests" / "test_one.py").write_text("def test_ok():\n    pass\n")
    passed = repo("test")
    assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout + passed.stderr
    assert "-m pytest -q" in repo.calls.read_text()
    # pytest's "no tests collected" (5) is not hidden, neither by ./test nor by CI.
    assert repo("test", "-k", "no_such_test").returncode == 5
    ci = repo(".ci/run", CI="true")
    assert ci.returncode == 0 and "1 passed" in ci.stdout
    (repo.path / "tests" / "test_one.py").write_text("def test_bad():\n    assert False\n")
    assert repo(".ci/run", CI="true").returncode == 1
    assert len(repo.pip_calls()) == 1


def test_python_too_old_or_missing_is_one_clear_error(repo):
    repo.system_python("3.8.10")
    line = one_error(repo("run"))
    assert "needs Python 3.10 or newer" in line and "3.8.10" in line
    assert not (repo.path / ".venv").exists()
    (repo.path.parent / "bin" / "python3").unlink()
    line = one_error(repo("test"))
    assert "python3 not found" in line
    assert repo.pip_calls() == []


def test_missing_venv_module_names_the_debian_package(repo):
    repo.system_python("3.11.2")
    line = one_error(repo("test", FAKE_NO_VENV="1"))
    assert "apt install python3.11-venv" in line
    assert not (repo.path / ".venv").exists()


def test_broken_venv_is_one_clear_error_and_left_alone(repo):
    (repo.path / ".venv" / "bin").mkdir(parents=True)
    (repo.path / ".venv" / "bin" / "python").symlink_to("/nonexistent/python3.9")
    line = one_error(repo("run"))
    assert ".venv is broken" in line and "rm -rf" in line
    assert (repo.path / ".venv" / "bin" / "python").is_symlink()


def test_not_enough_disk_space_is_one_clear_error_before_installing(repo):
    repo.make_venv()
    line = one_error(repo("run", EXPTRAIN_REQUIRED_MB="999999999"))
    assert "not enough disk space" in line and "999999999 MB" in line
    assert repo.pip_calls() == []


@pytest.mark.parametrize(
    "output, expected",
    [
        (OFFLINE_PIP, "could not install torch==2.13.0: no network to the package index and no wheel of it on disk"),
        (
            "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
            "not enough disk space",
        ),
        (
            "ERROR: No matching distribution found for torch==2.13.0",
            "could not install torch==2.13.0: neither the package index nor the wheels on disk have it",
        ),
        (
            "some output\nERROR: Failed building editable for exptrain",
            "installing the dependencies failed: ERROR: Failed building",
        ),
    ],
)
def test_failed_install_is_one_clear_error_and_retried_next_time(repo, output, expected):
    repo.make_venv()
    line = one_error(repo("test", FAKE_PIP_RC="1", FAKE_PIP_OUTPUT=output))
    assert expected in line and "exptrain-install.log" in line
    assert not (repo.path / ".venv" / ".exptrain-installed").exists()
    assert repo("test", "--version").returncode == 0  # the next call installs again
    assert len(repo.pip_calls()) == 2


def test_second_setup_of_this_checkout_skips_the_install():
    """After ./test (CI) or ./run set up this checkout, the set-up is a no-op that takes well
    under a few seconds; `--check` says so without changing anything."""
    setup = REPO_ROOT / "scripts" / "ensure-venv"
    if subprocess.run([str(setup), "--check"], capture_output=True).returncode != 0:
        pytest.skip("this checkout's .venv was not set up by ./test or ./run")
    stamp = REPO_ROOT / ".venv" / ".exptrain-installed"
    before = stamp.stat().st_mtime_ns
    start = time.monotonic()
    again = subprocess.run([str(setup)], capture_output=True, text=True, timeout=HANG_TIMEOUT, stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and "dependencies up to date" in again.stderr, again.stderr
    assert time.monotonic() - start < 10
    assert stamp.stat().st_mtime_ns == before
