"""The questions of docs/RESULTS.md, 3 seeds each: does the term lower the codes' delay-aligned dependence against
weight 0, at what reconstruction cost, does delay matching beat same-frame, and are the paper's fixed bandwidths
blind at this scale?

    python -m grids.local reproduction --small -j 2 num_threads=1     # 12 XPs, about 6 min each on one core
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
            # ours: exact dHSIC, median bandwidth, delay-matched (the small config's defaults), then same-frame
            launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.pattern': 'delay'})
            launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.pattern': 'parallel'})
            # the paper's estimator as published: permutation, fixed bandwidths, delay-matched
            launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.estimator': 'permutation', 'mmd.bandwidth': 'fixed'})
