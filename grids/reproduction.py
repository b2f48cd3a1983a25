"""The main question of docs/RESULTS.md, 3 seeds per setting: does the term (ours: exact dHSIC, median bandwidth,
delay-matched, the small config's defaults) lower the codes' delay-aligned dependence against weight 0, and at what
reconstruction cost? Weights 10 and 100 collapse a codebook at small scale; the usage guard (`mmd.warmup.guard`)
is the tried remedy, at 10 and at 3 (where it tells whether weight 3's drop needs late codebook use: round 3 of
docs/RESULTS.md). Same-frame matching and the paper's estimator are in delay_ablation / estimator_ablation.

    python -m grids.local reproduction --small -j 2 num_threads=1   # 21 XPs, about 30 min each, two at a time
    python -m audiocraft_mmd.report reproduction --small --per-xp --out docs/results
"""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHTS = [0., 1., 3., 10., 100.]
GUARDED = [(3., 0.1), (10., 0.1)]  # (weight, mmd.warmup.guard)


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            for weight in WEIGHTS:
                launcher({'seed': seed, 'mmd.weight': weight})
            for weight, guard in GUARDED:
                launcher({'seed': seed, 'mmd.weight': weight, 'mmd.warmup.guard': guard})
