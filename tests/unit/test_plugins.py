"""Plug-ins (src/plugins.py, train.py --import): the README's example end to end, the
resume/fork rules for a recorded plug-in, and the errors of a plug-in that cannot be used.

Runs that succeed happen in subprocesses (a plug-in's registrations would otherwise stay
in the test process); the in-process tests undo what they register (``clean_registries``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from src import plugins
from src.config import ConfigError, RunConfig
from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.plugins import check_records, check_resume_imports, import_plugins, merge_imports, verify_plugins
from tests.helpers import REPO_ROOT, sha256

EXAMPLE = REPO_ROOT / "examples" / "plugin_example.py"


def log_records(experiment: Path):
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def snapshot(directory: Path):
    """Every file's bytes and modification time (a refused command must change neither)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# -- in process: the Python API ------------------------------------------------------------
@pytest.fixture
def clean_registries():
    """Undo every registration, module and import record a test adds; calling it does so
    at once (as if the next command ran in a new process)."""
    entries = {registry: dict(registry._entries) for registry in (ModelRegistry, DatasetRegistry)}
    modules, loaded, path = set(sys.modules), dict(plugins._loaded), list(sys.path)
    temp = tempfile.gettempdir()

    def restore() -> None:
        for registry, saved in entries.items():
            registry._entries.clear()
            registry._entries.update(saved)
        for name in set(sys.modules) - modules:  # the plug-ins' own modules (not torch's lazy ones)
            module = sys.modules[name]
            places = [getattr(module, "__file__", None) or "", *(getattr(module, "__path__", None) or [])]
            if name.startswith(plugins.MODULE_PREFIX) or any(str(p).startswith(temp) for p in places):
                del sys.modules[name]
        plugins._loaded.clear()
        plugins._loaded.update(loaded)
        plugins._warned.clear()
        sys.path[:] = path

    yield restore
    restore()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, clean_registries):
    """``train.main(args)`` in this process, in ``tmp_path``, each call starting with no
    plug-in imported (like a new process); returns (exit code, stdout, stderr)."""
    import train

    monkeypatch.chdir(tmp_path)

    def call(*args: str):
        clean_registries()
        capsys.readouterr()
        code = train.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


SMALL = ("--dataset", "stripes", "--dataset-option", "num_samples=128", "--model", "tiny_cnn", "--quiet")


def test_changed_plugin_refuses_resume_and_fork_records_the_new_hash(tmp_path, cli):
    plugin = tmp_path / "plugin_example.py"
    plugin.write_bytes(EXAMPLE.read_bytes())
    assert cli("--import", "plugin_example.py", *SMALL, "--epochs", "1")[0] == 0
    old_hash = sha256(plugin)
    plugin.write_text(plugin.read_text() + "\n# tuned the model\n")
    new_hash = sha256(plugin)
    before = snapshot(tmp_path / "runs")

    for extra in ((), ("--import", "plugin_example.py")):  # naming it again changes nothing
        code, _, err = cli("--resume", "exp1", "--epochs", "2", "--quiet", *extra)
        assert code == 2
        assert err.strip() == (
            f"Error: plug-in plugin_example.py changed since the run started (sha256 {old_hash[:12]}... -> "
            f"{new_hash[:12]}...); resume needs the same code: restore it, or --fork exp1 to continue with the new code."
        )
        assert snapshot(tmp_path / "runs") == before, "a refused resume changes nothing"

    code, out, err = cli("--fork", "exp1", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert f"Warning: plug-in plugin_example.py changed since exp1 recorded it (sha256 {old_hash[:12]}" in out
    assert json.loads((tmp_path / "runs" / "exp2" / "config.json").read_text())["imports"] == [
        {"module": "plugin_example.py", "path": str(plugin.resolve()), "sha256": new_hash}
    ]
    assert snapshot(tmp_path / "runs" / "exp1") == {k[len("exp1/") :]: v for k, v in before.items()}

    plugin.rename(tmp_path / "moved.py")
    before = snapshot(tmp_path / "runs")
    for command in (("--resume", "exp2", "--epochs", "3"), ("--fork", "exp2", "--epochs", "3")):
        code, _, err = cli(*command, "--quiet")
        assert code == 2
        assert err.strip() == (
            f"Error: plug-in plugin_example.py is missing: exp2 imports {plugin.resolve()}, which no longer exists; "
            "restore it there (--resume and --fork import the plug-ins a run recorded)."
        )
    assert snapshot(tmp_path / "runs") == before


def test_module_form_from_the_current_directory_resumes_from_elsewhere(tmp_path, monkeypatch, cli):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_bytes(EXAMPLE.read_bytes())
    assert cli("--import", "mypkg.models", *SMALL, "--epochs", "1")[0] == 0
    config = json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())
    assert config["imports"] == [
        {"module": "mypkg.models", "path": str((package / "models.py").resolve()), "sha256": sha256(EXAMPLE)}
    ]
    # From another directory the package is found where the run recorded it; naming the
    # run's own plug-in again (here by its path) is harmless, adding another is refused.
    monkeypatch.chdir(tmp_path / "mypkg")
    code, out, err = cli(
        "--resume",
        "exp1",
        "--epochs",
        "2",
        "--runs-dir",
        tmp_path / "runs",
        "--import",
        package / "models.py",
        "--quiet",
    )
    assert code == 0, err
    assert "Resuming exp1" in out and [r["epoch"] for r in log_records(tmp_path / "runs" / "exp1")] == [1, 2]
    write_plugin(tmp_path / "extra.py")
    code, _, err = cli(
        "--resume",
        "exp1",
        "--epochs",
        "3",
        "--runs-dir",
        tmp_path / "runs",
        "--import",
        tmp_path / "extra.py",
        "--quiet",
    )
    assert (
        code == 2 and f"--resume exp1 cannot add plug-in {tmp_path / 'extra.py'} (the run imports: mypkg.models)" in err
    )
    code, _, err = cli(
        "--fork", "exp1", "--epochs", "3", "--runs-dir", tmp_path / "runs", "--import", tmp_path / "extra.py", "--quiet"
    )
    assert code == 0, err
    assert [r["module"] for r in json.loads((tmp_path / "runs" / "exp2" / "config.json").read_text())["imports"]] == [
        "mypkg.models",
        str(tmp_path / "extra.py"),
    ]


PLUGIN = """
import torch.nn as nn
from src.models import ModelRegistry

@ModelRegistry.register("{name}")
class Model(nn.Module):
    version = {version}

    def __init__(self, num_classes, in_channels, input_size):
        super().__init__()
        self.linear = nn.Linear(in_channels * input_size * input_size, num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))
"""


def write_plugin(path: Path, name: str = "plugin_test_model", version: int = 1) -> Path:
    path.write_text(PLUGIN.format(name=name, version=version))
    return path


def test_import_is_idempotent_and_recorded(tmp_path, clean_registries):
    plugin = write_plugin(tmp_path / "mine.py")
    first = import_plugins([str(plugin)])
    assert first == [{"module": str(plugin), "path": str(plugin.resolve()), "sha256": sha256(plugin)}]
    assert import_plugins([str(plugin), str(plugin)]) == first, "the same file twice: no re-registration error"
    assert import_plugins(str(plugin)) == first
    assert ModelRegistry.get("plugin_test_model").__module__ == "exptrain_plugin_mine"
    assert RunConfig(model="plugin_test_model", imports=first).validate().imports == first


def test_changed_file_in_the_same_process_replaces_the_old_registration(tmp_path, clean_registries):
    plugin = write_plugin(tmp_path / "mine.py")
    [record] = import_plugins([str(plugin)])
    write_plugin(plugin, version=2)
    with pytest.raises(ConfigError, match=r"changed since the run started .*--fork exp7 to continue"):
        verify_plugins([record], "resume", experiment="exp7")
    assert ModelRegistry.get("plugin_test_model").version == 1, "a refused resume imports nothing"
    lines = []
    [forked] = verify_plugins([record], "fork", experiment="exp7", log=lines.append)
    assert forked["sha256"] == sha256(plugin) != record["sha256"]
    assert ModelRegistry.get("plugin_test_model").version == 2
    assert len(lines) == 1 and lines[0].startswith("Warning: plug-in")
    verify_plugins([record], "fork", experiment="exp7", log=lines.append)
    assert len(lines) == 1, "warned once"


def test_failed_import_is_undone_and_can_be_retried(tmp_path, clean_registries):
    plugin = tmp_path / "half.py"
    source = PLUGIN.format(name="plugin_half", version=1) + "raise RuntimeError('not yet\\nsecond line')\n"
    plugin.write_text(source)
    with pytest.raises(ConfigError) as error:
        import_plugins([str(plugin)])
    line = len(source.splitlines())
    assert str(error.value) == (
        f"plug-in {plugin} failed to import: RuntimeError: not yet (half.py, line {line}); "
        "fix it and try again (set EXPTRAIN_DEBUG=1 for the traceback)."
    )
    assert "\n" not in str(error.value)
    assert "plugin_half" not in ModelRegistry and "exptrain_plugin_half" not in sys.modules
    write_plugin(plugin, name="plugin_half")
    import_plugins([str(plugin)])
    assert "plugin_half" in ModelRegistry


@pytest.mark.parametrize(
    "source, message",
    [
        ("def f(:\n", r"SyntaxError: .* \(bad\.py, line 1\)"),
        ("import sys\nsys.exit(4)\n", r"called sys.exit\(4\) while being imported"),
        (
            "import not_a_module_anywhere\n",
            r"ModuleNotFoundError: No module named 'not_a_module_anywhere' \(bad.py, line 1\)",
        ),
        (PLUGIN.format(name="mynet", version=1), r"registers the model name 'mynet', which is already taken"),
    ],
)
def test_plugin_errors_name_the_plugin(tmp_path, clean_registries, source, message):
    (tmp_path / "bad.py").write_text(source)
    before = ModelRegistry.names()
    with pytest.raises(ConfigError, match=message):
        import_plugins([str(tmp_path / "bad.py")])
    assert ModelRegistry.names() == before


def test_clash_between_two_plugins_keeps_the_first(tmp_path, clean_registries):
    first = write_plugin(tmp_path / "one.py", name="plugin_twice")
    second = write_plugin(tmp_path / "two.py", name="plugin_twice", version=2)
    with pytest.raises(ConfigError, match=r"plug-in .*two\.py registers the model name 'plugin_twice'"):
        import_plugins([str(first), str(second)])
    assert ModelRegistry.get("plugin_twice").version == 1


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope.py", r"--import nope\.py: no such file"),
        ("data/", r"--import data/ is a directory"),
        ("notes.txt", r"--import notes\.txt is not a \.py file"),
        ("no_such_package_xyz.models", r"no module named 'no_such_package_xyz' in the current directory"),
        ("two words", r"neither a path to a \.py file nor a module name"),
        ("", r"expects a module name or a path"),
        (None, r"expects a module name or a path"),
    ],
)
def test_bad_specs(tmp_path, monkeypatch, clean_registries, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=message):
        import_plugins([spec])


def test_module_form_and_shadowing_checked_on_reimport(tmp_path, monkeypatch, clean_registries):
    package = tmp_path / "pluginpkg_xyz"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_plugin(package / "mod.py", name="plugin_module_form")
    monkeypatch.chdir(tmp_path)
    [record] = import_plugins(["pluginpkg_xyz.mod"])
    assert record == {
        "module": "pluginpkg_xyz.mod",
        "path": str((package / "mod.py").resolve()),
        "sha256": sha256(package / "mod.py"),
    }
    assert "plugin_module_form" in ModelRegistry
    assert import_plugins(["pluginpkg_xyz.mod"]) == [record]
    monkeypatch.chdir(REPO_ROOT)
    assert verify_plugins([record], "resume") == [record]
    with pytest.raises(ConfigError, match="namespace package"):
        (tmp_path / "nsonly_xyz").mkdir()
        monkeypatch.chdir(tmp_path)
        import_plugins(["nsonly_xyz"])


def test_damaged_records_are_refused(tmp_path, clean_registries):
    good = {"module": "x.py", "path": str(tmp_path / "x.py"), "sha256": "0" * 64}
    for bad in (
        "x.py",
        ["x.py"],
        [{**good, "extra": 1}],
        [{**good, "path": "x.py"}],
        [{**good, "sha256": "abc"}],
        [{**good, "module": 5}],
        {"module": "x"},
    ):
        with pytest.raises(ConfigError, match="imports in"):
            check_records(bad)
        with pytest.raises(ConfigError):
            RunConfig(imports=bad).validate()
    check_records([good])
    with pytest.raises(ConfigError, match="x.py is missing"):
        verify_plugins([good], "fork", experiment="exp1")


def test_resume_may_repeat_but_not_add_and_fork_may_add(tmp_path):
    one = {"module": "one.py", "path": "/a/one.py", "sha256": "1" * 64}
    two = {"module": "two.py", "path": "/a/two.py", "sha256": "2" * 64}
    check_resume_imports([one], [dict(one, module="../a/one.py")], "exp1")
    with pytest.raises(ConfigError, match=r"--resume exp1 cannot add plug-in two.py .*--fork exp1 --import two.py"):
        check_resume_imports([one], [one, two], "exp1")
    assert merge_imports([one], [two, one]) == [one, two]


def test_saved_config_with_damaged_imports_is_refused_before_anything_runs(tmp_path):
    from src.run.plan import resolve_config

    experiment = tmp_path / "runs" / "exp1"
    experiment.mkdir(parents=True)
    config = RunConfig(dataset="synthetic", model="mlp").to_dict()
    config["imports"] = "plugin.py"
    (experiment / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"imports in .*config\.json must be a list of plug-in records"):
        resolve_config({}, str(tmp_path / "runs"), "exp1", None)
