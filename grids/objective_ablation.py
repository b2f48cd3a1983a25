"""The objectives head to head (issue 18): weight 0; the authors' objective (`mmd=authors`) at several weights in
their units, with and without the usage guard (which weight is the largest that keeps every codebook in use?);
and this project's best setting with the chosen codewords against the residuals after each stage (the authors'
final stream), 3 seeds each. At small scale the authors' weights are 0.1, 1 and 10 on `encodec_mmd_small_v2`
(`--small`; 100 and 300 with the guard only), and 100, 1000 and 10000 on `encodec_mmd_small` (`--small_v1`, the first
runs in RESULTS.md).

    python -m grids.local objective_ablation --small -j 2 num_threads=1
    python -m audiocraft_mmd.report objective_ablation --small --per-xp --per-epoch valid/codes_tc_excess

At small scale the best setting is the reproduction grid's weight 3 with the usage guard (the small configs'
`mmd=small` objective: dHSIC, median bandwidth, samples normalizer; the same XPs as `reproduction`'s for weight 0
and for the codeword stream); at the paper's scale `mmd=dhsic_guarded`. The authors' term's gradient per unit
weight is about (frames per clip)^2 = 46^2 times ours, and its size against the reconstruction losses is logged as
`mmd_grad_ratio` (docs/compression_mmd.md).
"""
from ._common import COMPARED_SETTINGS, SEEDS, bind_base, grid_scale
from ._explorers import CompressionMMDExplorer

# small_v1: the weights first run on encodec_mmd_small, where 1000 stopped the tokenizer from learning (RESULTS.md);
# on v2 the grid bisects downward: per unit weight the term already pulls the encoder 4-7 times harder than the
# reconstruction losses on its step
AUTHORS_WEIGHTS = {'small_v1': [100., 1000., 10000.], 'small': [0.1, 1., 10.], 'paper': [300., 1000., 3000.]}
# with the guard, weights 10 and 100 kept every codebook of v2 in use where unguarded 10 collapsed them
# (RESULTS.md): the guarded sweep goes further to find where the guard stops holding
GUARDED_ONLY_WEIGHTS = {'small_v1': [], 'small': [100., 300.], 'paper': []}
GUARD = 0.1
BEST = {'small': COMPARED_SETTINGS['small'][1], 'paper': {'mmd': 'dhsic_guarded'}}


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher, paper_objective=None)  # every XP names its objective
    scale = grid_scale()
    with launcher.job_array():
        for seed in SEEDS:
            launcher({'seed': seed, 'mmd.weight': 0.})
            for weight in AUTHORS_WEIGHTS[scale] + GUARDED_ONLY_WEIGHTS[scale]:
                authors = {'seed': seed, 'mmd': 'authors', 'mmd.weight': weight}
                if weight not in GUARDED_ONLY_WEIGHTS[scale]:
                    launcher(authors)
                launcher({**authors, 'mmd.warmup.guard': GUARD})
            best = BEST['paper' if scale == 'paper' else 'small']
            launcher({'seed': seed, **best})
            launcher({'seed': seed, **best, 'mmd.stream': 'residual'})
