"""The documentation stays true: every guide's Python runs as written, the API reference is
regenerated from the current docstrings, and relative links point at files that exist."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
TASKS = ["add-a-control", "add-a-model", "add-a-restart-strategy", "add-a-score", "add-an-experiment", "bring-your-own",
         "compare-scores", "find-a-supermask", "find-a-ticket", "masks-in-your-own-loop",
         "prune-at-initialization", "run-a-control", "run-an-instability-analysis"]


def python_blocks(md: Path) -> str:
    return "\n\n".join(re.findall(r"```python\n(.*?)```", md.read_text(), flags=re.S))


def test_a_guide_for_each_user_task():
    assert [g.stem for g in GUIDES] == TASKS
    index = (ROOT / "docs" / "README.md").read_text()
    for g in GUIDES:
        assert f"guides/{g.name}" in index, g.name
        assert python_blocks(g).strip(), f"{g.name} has no code that runs"


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_code_runs(guide, tmp_path):
    """The guide's Python blocks, in order, in one fresh process (as a reader pastes them)."""
    script = tmp_path / "guide.py"
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\n" + python_blocks(guide))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, f"{guide.name}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def test_api_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "api.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + " — regenerate it with: python docs/api.py"


def test_relative_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "notebooks" / "README.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
