"""The paper's kernel ablation: the five kernels, each rescaled to about 1 on the baseline tokenizer.

KERNEL_SCALES are the `mmd.scale` factors. Measure them on a weight-0 XP of the same scale with
`python -m audiocraft_mmd.calibrate SIG` (prints one scale per kernel) and paste them here.
"""
from ._common import SEEDS, bind_base
from ._explorers import CompressionMMDExplorer

WEIGHT = 100.
KERNEL_SCALES = {
    'multiscale_gaussian': 1.,
    'gaussian': 1.,
    'inverse_quadratic': 1.,
    'linear': 1.,
    'quadratic': 1.,
}


@CompressionMMDExplorer
def explorer(launcher):
    bind_base(launcher)
    with launcher.job_array():
        for seed in SEEDS:
            for kernel, scale in KERNEL_SCALES.items():
                launcher({'seed': seed, 'mmd.weight': WEIGHT, 'mmd.kernel': kernel, 'mmd.scale': scale})
