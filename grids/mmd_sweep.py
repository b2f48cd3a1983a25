"""The paper's weight sweep: weight 0 (the baseline tokenizer) then a log-spaced range, 3 seeds each.

    dora grid mmd_sweep                           # SLURM, the paper's tokenizer
    python -m grids.local mmd_sweep --small       # no SLURM: encodec_mmd_small, one XP after the other
"""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHTS = [0., 10., 30., 100., 300., 1000.]


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            for weight in WEIGHTS:
                launcher({'seed': seed, 'mmd.weight': weight})
