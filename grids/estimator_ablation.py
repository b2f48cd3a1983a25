"""Estimators (permutation, dhsic, rff) x bandwidth (the paper's fixed values vs the median heuristic)."""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHT = 100.


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            for estimator in ['permutation', 'dhsic', 'rff']:
                for bandwidth in ['fixed', 'median']:
                    launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.estimator': estimator,
                              'mmd.bandwidth': bandwidth})
