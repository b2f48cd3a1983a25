"""The authors' schedule (buffer 32 batches, re-encode, one term every 32 updates) vs the term at every step."""
from ._common import SEEDS, bind_base, is_small
from ._explorers import CompressionMMDExplorer

WEIGHT = 100.


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.schedule': 'per_step'})
            # 32 batches re-encoded at once is the paper's GPU setting; on 2 CPU cores 8 keeps the O(N^2) term cheap.
            launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.schedule': 'paper',
                      'mmd.paper_every': 8 if is_small() else 32})
