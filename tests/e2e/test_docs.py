"""The documentation: the manual in docs/ builds with `mkdocs build --strict` (a broken
link or anchor, or a page missing from mkdocs.yml's nav, fails it), and README.md stays
the short front door whose links lead to files that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 220
HANG_GUARD_S = 600  # mkdocs builds these pages in about a second; this only stops a hang


def test_manual_builds_strictly(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO_ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    pages = sorted(p.relative_to(REPO_ROOT / "docs").with_suffix("") for p in (REPO_ROOT / "docs").glob("*.md"))
    for page in pages:  # every page was built (strict mode also refuses a page missing from nav)
        built = site / "index.html" if page.name == "index" else site / page / "index.html"
        assert built.is_file(), f"docs/{page}.md was not built"


def test_mkdocs_config_is_strict_and_checks_anchors():
    config = (REPO_ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict: true$", config, re.M)
    for check in ("omitted_files", "unrecognized_links", "anchors"):
        assert re.search(rf"^  {check}: warn$", config, re.M), f"mkdocs.yml validation lacks {check}: warn"


def test_readme_is_the_short_front_door():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_links_lead_to_files_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into docs/"
    for target in local:
        assert (REPO_ROOT / target).exists(), f"README.md links to {target}, which does not exist"
    assert "docs/extending.md" in local and "docs/exit-codes.md" in local


def test_readme_and_manual_name_the_same_quick_loop():
    """The quick loop the README names is the one the manual's Tests page names."""
    testing = (REPO_ROOT / "docs" / "testing.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "./test tests/unit" in readme and "./test tests/unit" in testing
