"""Commands in README.md and docs/ marked `<!-- runnable ... -->` work exactly as written."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
_BLOCK = re.compile(r"<!-- runnable[^>]*-->\s*```sh\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, match in enumerate(_BLOCK.finditer(path.read_text(encoding="utf-8"))):
            blocks.append((f"{path.relative_to(ROOT)}#{index}", match.group(1)))
    return blocks


def test_the_readme_has_runnable_blocks() -> None:
    """The README's own path to 'run it on your data' is among them."""
    assert any(name.startswith("README.md") for name, _ in runnable_blocks())


@pytest.mark.parametrize(("name", "script"), runnable_blocks())
def test_runnable_block(name: str, script: str) -> None:
    """Each block runs in bash from the repository root and exits 0."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
