"""The factorization gap: LMs on tokenizers with and without the term, per pattern and seed.

For each seed (3) and tokenizer setting (weight 0; the setting docs/RESULTS.md ranks best at small scale, weight 3
with the usage guard; at the paper's scale, the paper's weight 100), the grid trains the tokenizer (the same
command line as the reproduction grid's, so the same XP: trained once, reused), then two LMs on its codes at
equal size: delay (the fast factorized LM, on which `python -m audiocraft_mmd.factorization` measures the cost
given the LM's context) and unroll (the joint chain-rule LM, K steps per frame). The LMs stop at their valid-NLL
plateau (`musicgen_mmd.early_stop.patience`), so that the two patterns compare at convergence. Tokenizers trained
elsewhere join with AUDIOCRAFT_MMD_TOKENIZERS=SIG,SIG (or export folders): their LMs, 3 seeds each.

    python -m grids.local factorization_gap --small -j 2 num_threads=1   # LMs wait for their tokenizer XP
    python -m audiocraft_mmd.report factorization_gap --small
    dora grid factorization_gap                                           # SLURM: the 32 kHz configs
"""
import os

from ._common import COMPARED_SETTINGS, SEEDS, is_small, small_config
from ._explorers import LMExplorer

PATTERNS = ['delay', 'unroll']
EARLY_STOP = {'small': {'optim.epochs': 60, 'musicgen_mmd.early_stop.patience': 3},
              'paper': {'musicgen_mmd.early_stop.patience': 5}}


def extra_tokenizers():
    """Tokenizers given by signature or export folder in AUDIOCRAFT_MMD_TOKENIZERS (comma-separated)."""
    return [t for t in os.environ.get('AUDIOCRAFT_MMD_TOKENIZERS', '').split(',') if t]


@LMExplorer
def explorer(launcher):
    from audiocraft_mmd.train import main
    scale = 'small' if is_small() else 'paper'
    tokenizers = launcher.bind(solver=small_config() or 'compression/encodec_mmd')
    lms = launcher.bind(solver='musicgen/musicgen_mmd_small' if is_small() else 'musicgen/musicgen_mmd_32khz')
    lms.bind_(EARLY_STOP[scale])
    if is_small():
        tokenizers.slurm_(gpus=1, mem_per_gpu=16)
        lms.slurm_(gpus=1, mem_per_gpu=16)
    else:
        tokenizers.slurm_(gpus=8, mem_per_gpu=40)
        lms.slurm_(gpus=32, mem_per_gpu=40)
    for seed in SEEDS:
        references = []
        for setting in COMPARED_SETTINGS[scale]:
            tokenizer = tokenizers.bind({'seed': seed, **setting})
            tokenizer()
            references.append(main.get_xp(tokenizer._argv).sig)
        for reference in references + extra_tokenizers():
            for pattern in PATTERNS:
                lms({'seed': seed, 'compression_model_checkpoint': reference, 'codebooks_pattern.modeling': pattern})
