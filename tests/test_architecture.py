"""The import direction kernels <- rollout <- gateway, and loadtests speaking only public protocols."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_modules_open_with_a_docstring() -> None:
    missing = []
    for package in ("gateway", "kernels", "rollout", "loadtests"):
        for path in (ROOT / package).rglob("*.py"):
            if "pb" in path.parts:
                continue
            text = path.read_text().lstrip()
            if not text.startswith(('"""', "'''", 'r"""')):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
