"""Every install path syncs with ``uv sync --locked``: a lock out of step with pyproject.toml fails.

``--frozen`` would install the stale lock as it is, silently dropping a dependency someone added to
pyproject.toml; ``--locked`` checks the lock against pyproject.toml first and refuses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLERS = [ROOT / "scripts" / "install.sh", ROOT / "Dockerfile"]


def uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).is_file():
        pytest.skip("uv not installed")
    return found


@pytest.mark.parametrize("path", INSTALLERS, ids=lambda p: p.name)
def test_installers_sync_locked_never_frozen(path: Path) -> None:
    syncs = [line for line in path.read_text().splitlines()
             if re.search(r"\buv sync\b", line) and not line.lstrip().startswith("#")]
    assert syncs, f"{path.name} installs no environment with uv sync"
    for line in syncs:
        assert "--locked" in line and "--frozen" not in line, f"{path.name}: {line.strip()}"


def test_a_stale_lock_fails_the_sync(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    check = [uv(), "sync", "--locked", "--dry-run", "--offline"]
    ok = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, f"the committed lock does not match pyproject.toml:\n{ok.stderr}"
    # A dependency added to pyproject.toml without `uv lock` (six is already in the lock, so this
    # resolves offline: the failure is the mismatch, not the network).
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('dependencies = [\n', 'dependencies = [\n    "six>=1.0",\n', 1))
    stale = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert stale.returncode != 0
    assert "needs to be updated" in stale.stderr, stale.stderr
