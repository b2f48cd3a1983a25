"""Does the drop in dependence at weight 3 survive longer training? At small scale the reproduction grid trains
1500 updates, and weight 0's delay-aligned dependence still grows at its end while weight 3's codebooks come into
use later (docs/RESULTS.md): part of the drop could be a less-trained tokenizer. This grid trains the same settings
4 times longer (6000 updates) and evaluates on the held-out pieces at the end: weights 0 and 3, and 10 with the
usage guard, 3 seeds each. At the paper's scale (400k updates already) it is the reproduction grid's subset.

    python -m grids.local long_training --small -j 9 device=cuda num_threads=1   # one GPU, 9 XPs side by side
    python -m audiocraft_mmd.report long_training --small --per-xp --per-epoch valid/codes_tc_excess
"""
from ._common import SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

SETTINGS = [{'mmd.weight': 0.}, {'mmd.weight': 3.}, {'mmd.weight': 10., 'mmd.warmup.guard': 0.1}]
SMALL_EPOCHS = 60  # 4 x encodec_mmd_small's 15 epochs of 100 updates


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    if is_small():
        launcher.bind_({'optim.epochs': SMALL_EPOCHS, 'evaluate.every': SMALL_EPOCHS,
                        'generate.every': SMALL_EPOCHS, 'checkpoint.save_every': 10})
    with launcher.job_array():
        for seed in SEEDS:
            for setting in SETTINGS:
                launcher({'seed': seed, **setting})
