"""The tokenizer on real recordings (issue 13): the reproduction grid's settings, trained on the real-music preset.

At small scale `encodec_mmd_small` unchanged, weight 0 and the setting docs/RESULTS.md ranks best (weight 3 with the
usage guard, `mmd.warmup.guard=0.1`); at the paper's scale `encodec_mmd` with the paper's weights (0 and 100). 3 seeds
each, all on `dset=audio/real_music` (build it first: `make dataset-real`). The cross-domain table evaluates these
XPs on the embedded evaluate pieces and the reproduction grid's embedded tokenizers on the real evaluate tracks
(`python -m audiocraft_mmd.evaluate --dset`, docs/real_music.md):

    python -m grids.local real_music --small -j 2 num_threads=1   # 6 XPs, two at a time
    python -m audiocraft_mmd.evaluate --dset audio/embedded_music SIG...   # each XP on the other domain
    python -m audiocraft_mmd.report real_music --small --per-xp --dset audio/embedded_music
    dora grid real_music                                              # SLURM: the paper's tokenizer
"""
from ._common import COMPARED_SETTINGS, SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

DSET = 'audio/real_music'


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    launcher.bind_({'dset': DSET})
    with launcher.job_array():
        for seed in SEEDS:
            for setting in COMPARED_SETTINGS['small' if is_small() else 'paper']:
                launcher({'seed': seed, **setting})
