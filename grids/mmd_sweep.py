"""The paper's weight sweep: weight 0 (the baseline tokenizer) then a log-spaced range, 3 seeds each.

    dora grid mmd_sweep                           # SLURM, the paper's tokenizer
    python -m grids.local mmd_sweep --small       # no SLURM: encodec_mmd_small, one XP after the other

At the paper's scale the objective is the authors' (`mmd=authors`, compression/encodec_mmd's default) and the
weights are in their units, around their 1000. At small scale the objective is encodec_mmd_small's (`mmd=small`:
dHSIC, median bandwidth, samples normalizer) and the range is lower: there weights 10 and 100 collapse a codebook
and 3 is the largest measured that keeps every codebook in use (docs/RESULTS.md).
"""
from ._common import SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

WEIGHTS = {'small': [0., 0.3, 1., 3., 10., 30.], 'paper': [0., 100., 300., 1000., 3000.]}


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher, paper_objective=None)
    with launcher.job_array():
        for seed in SEEDS:
            for weight in WEIGHTS['small' if is_small() else 'paper']:
                launcher({'seed': seed, 'mmd.weight': weight})
