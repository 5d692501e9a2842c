"""The project's shared parity folder (../shared/parity, beside the checkout on the development machines), checked
whole with its own checkers when it is there; a fresh clone checks the in-repository set (tests/parity/engine)
through the per-case tests instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_PARITY

ROOT = Path(__file__).resolve().parents[1]
CHECKS = [("parity_check.py", "", r"parity: (\d+)/(\d+) cases"),
          ("regional_check.py", "regional", r"regional: (\d+)/(\d+) cases"),
          ("cond_check.py", "cond", r"cond: (\d+)/(\d+) cases")]


@pytest.mark.parametrize("script,sub,pattern", CHECKS, ids=[c[0] for c in CHECKS])
def test_shared_parity_set_passes_whole(script, sub, pattern):
    if not (SHARED_PARITY / script).is_file():
        pytest.skip(f"no shared parity folder at {SHARED_PARITY} (the in-repository set is checked instead)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(SHARED_PARITY / script), str(SHARED_PARITY / sub)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    m = re.search(pattern, r.stdout)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    assert m.group(1) == m.group(2), r.stdout[-3000:]
