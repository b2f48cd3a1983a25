"""The main question of docs/RESULTS.md, 3 seeds each: does the term (ours: exact dHSIC, median bandwidth,
delay-matched, the small config's defaults) lower the codes' delay-aligned dependence against weight 0, and at what
reconstruction cost? Same-frame matching and the paper's estimator are in delay_ablation / estimator_ablation.

    python -m grids.local reproduction --small              # 6 XPs, about 15 min each on 2 cores
    python -m audiocraft_mmd.report reproduction --small --out docs/results
"""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHT = 100.


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            launcher({'seed': seed, 'mmd.weight': 0.})
            launcher({'seed': seed, 'mmd.weight': WEIGHT})
