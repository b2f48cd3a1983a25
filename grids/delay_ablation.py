"""Delay-matched term (the tuple MusicGen's delay pattern samples in one step) vs same-frame tuples.

At small scale the weight is 3, the largest measured that keeps every codebook in use (10 collapses one, see
docs/RESULTS.md); at the paper's scale, the paper's 100. Unguarded, weight 3 brings the codebooks into use late
at small scale, which lowers the dependence by itself (docs/RESULTS.md); so the small scale also compares the two
patterns with the usage guard (`mmd.warmup.guard`), at equal codebook use.

    python -m grids.local delay_ablation --small -j 2 num_threads=1
"""
from ._common import SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

WEIGHTS = {'small': 3., 'paper': 100.}
SMALL_GUARD = 0.1


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    weight = WEIGHTS['small' if is_small() else 'paper']
    with launcher.job_array():
        for seed in SEEDS:
            launcher({'seed': seed, 'mmd.weight': 0.})
            for pattern in ['delay', 'parallel']:
                launcher({'seed': seed, 'mmd.weight': weight, 'mmd.pattern': pattern})
                if is_small():
                    launcher({'seed': seed, 'mmd.weight': weight, 'mmd.pattern': pattern,
                              'mmd.warmup.guard': SMALL_GUARD})
