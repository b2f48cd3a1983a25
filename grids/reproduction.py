"""The main question of docs/RESULTS.md, 3 seeds per weight: does the term (ours: exact dHSIC, median bandwidth,
delay-matched, the small config's defaults) lower the codes' delay-aligned dependence against weight 0, and at what
reconstruction cost? Same-frame matching and the paper's estimator are in delay_ablation / estimator_ablation.

    python -m grids.local reproduction --small -j 2 num_threads=1   # 9 XPs, about 25-30 min each, two at a time
    python -m audiocraft_mmd.report reproduction --small --per-xp --out docs/results
"""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHTS = [0., 10., 100.]


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            for weight in WEIGHTS:
                launcher({'seed': seed, 'mmd.weight': weight})
