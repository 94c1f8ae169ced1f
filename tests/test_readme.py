"""Every ```python block of the README runs as written.

Each block is self-contained and runs in a fresh interpreter (a block may install an exporter or
start threads; none of that must leak into another block or into this test process). A block
preceded by ``<!-- no-test -->`` is skipped: only for code that needs a real external service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "README.md",)
SKIP_MARK = "<!-- no-test -->"
# Run as a module called "readme", so `if __name__ == "__main__":` blocks (servers) stay idle.
RUNNER = (
    "import sys; name = sys.argv[1]; code = sys.stdin.read();"
    " exec(compile(code, name, 'exec'), {'__name__': 'readme'})"
)


@dataclass(frozen=True)
class Block:
    source: Path
    line: int
    code: str
    skip: bool

    @property
    def name(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if fence[3:].strip().lower() not in ("python", "py"):
            continue
        previous = next(
            (lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), ""
        )
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", previous == SKIP_MARK))
    return blocks


BLOCKS = [block for path in SOURCES if path.exists() for block in python_blocks(path)]


def test_there_are_blocks_to_test() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip:
        pytest.skip("marked no-test: needs an external service")
    # The user's tracing settings must not change what a block does (or where its runs go);
    # caches and spools stay inside the test's directory.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_"))
    }
    env.update(
        TRACESTITCH_STRICT="1",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        XDG_DATA_HOME=str(tmp_path / "data"),
    )
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, block.name],
        input=block.code,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
