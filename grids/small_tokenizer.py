"""The small tokenizer's reconstruction losses (issue 21): what brings ViSQOL back on `encodec_mmd_small_v2`.

v2 (l1 at 1) leaves v1's SI-SNR plateau within 300 updates but scores ViSQOL 0.09 lower than v1 (l1 at 0.1) on
both datasets (docs/RESULTS.md, *A small tokenizer that reconstructs*). The two tries named there, at weight 0 and
3 seeds on each dataset: l1 at 1 for the first 300 updates then AudioCraft's 0.1 (`loss_schedule`, the plateau
ends by update 300 on every v2 XP), and l1 at 0.3 throughout. The v2 baselines are the reproduction and real_music
grids' weight-0 XPs (046be1d5 48ddc9c2 7e81cf9b, 38c5380c ed19eecd 9d43bb7f). Small scale only: the paper's
tokenizer keeps AudioCraft's losses.

    python -m grids.local small_tokenizer --small -j 2 num_threads=1   # 12 XPs, ~25 min each on real music
    python -m audiocraft_mmd.report small_tokenizer --small --per-xp --per-epoch train/sisnr
"""
from ._common import SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

DSETS = ['audio/real_music', 'audio/embedded_music']
SETTINGS = [
    ['+loss_schedule.l1=[[300,0.1]]'],  # l1 at 1 (v2) until update 300, then 0.1 (v1)
    ['losses.l1=0.3'],
]


@CompressionMMDExplorer
def explorer(launcher):
    if not is_small():
        raise ValueError("small_tokenizer tunes the small CPU tokenizer's losses: run it at small scale "
                         "(`python -m grids.local small_tokenizer --small`, or AUDIOCRAFT_MMD_GRID_SCALE=small).")
    bind_base(launcher)
    with launcher.job_array():
        for dset in DSETS:
            for seed in SEEDS:
                for setting in SETTINGS:
                    launcher({'dset': dset, 'seed': seed, 'mmd.weight': 0.}, *setting)
