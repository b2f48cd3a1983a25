"""Delay-matched term (the tuple MusicGen's delay pattern samples in one step) vs same-frame tuples."""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHT = 100.


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            launcher({'seed': seed, 'mmd.weight': 0.})
            for pattern in ['delay', 'parallel']:
                launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.pattern': pattern})
