"""bench/readme_results.py: the README's results table is what bench/results/*.json say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_readme_results_table_is_current():
    result = subprocess.run([sys.executable, str(BENCH / "readme_results.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
