"""The benchmarks still run (smoke tests at a tiny size; the numbers themselves are read by people, not asserted)."""
import os
from pathlib import Path
import subprocess
import sys

import pytest

from audiocraft_mmd.env import REPO_ROOT

pytestmark = pytest.mark.slow


def test_bench_generation_prints_its_three_tables(embedded_music):
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT),
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, 'bench/bench_generation.py', '--seconds', '0.5', '--repeats', '1',
                          '--steps', '2'], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert 'delay / unroll speed:' in out
    assert '| audiocraft_mmd.generate.sample (export folder) |' in out
    assert '| musicgen_mmd |' in out and "| AudioCraft's MusicGenSolver |" in out
