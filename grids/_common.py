"""What the grids of this package share: the solver they bind, seeds, and cluster resources.

Every grid has two scales. By default it binds the paper's tokenizer (`compression/encodec_mmd`, 8 GPUs per XP,
for `dora grid NAME` on a SLURM cluster). With AUDIOCRAFT_MMD_GRID_SCALE=small it binds
`compression/encodec_mmd_small_v2` (2 CPU cores, ~20 min per XP), which `python -m grids.local NAME --small` runs
without SLURM; AUDIOCRAFT_MMD_GRID_SCALE=small_v1 (`--small_v1`) binds `compression/encodec_mmd_small` instead, the
small config before issue 21, on which the older tables of docs/RESULTS.md were made. The scale changes the XP
signatures, so all kinds of runs coexist in one Dora folder.
"""
import os
import typing as tp

SEEDS = [2024, 2025, 2026]  # at least 3 seeds per setting: a difference is claimed only where it clears them
# The tokenizer settings the LM and real-music grids compare: weight 0 against the setting docs/RESULTS.md ranks
# best at small scale (weight 3 with the usage guard) and, at the paper's scale, `paper_v1`'s weight (bound by
# `bind_base`).
COMPARED_SETTINGS = {
    'small': [{'mmd.weight': 0.}, {'mmd.weight': 3., 'mmd.warmup.guard': 0.1}],
    'paper': [{'mmd.weight': 0.}, {'mmd.weight': 100.}],
}


# AUDIOCRAFT_MMD_GRID_SCALE -> the small tokenizer config it binds
SMALL_CONFIGS = {'small': 'compression/encodec_mmd_small_v2', 'small_v1': 'compression/encodec_mmd_small'}


def is_small() -> bool:
    return small_config() is not None


def grid_scale() -> str:
    """`paper`, `small` or `small_v1` (AUDIOCRAFT_MMD_GRID_SCALE, validated)."""
    small_config()  # raises on an unknown scale
    return os.environ.get('AUDIOCRAFT_MMD_GRID_SCALE', '') or 'paper'


def small_config() -> tp.Optional[str]:
    """The small tokenizer config the grid scale binds (AUDIOCRAFT_MMD_GRID_SCALE), None at the paper's scale.

    Returns:
        str or None: a solver config name, e.g. `compression/encodec_mmd_small_v2`.
    """
    scale = os.environ.get('AUDIOCRAFT_MMD_GRID_SCALE', '')
    if scale and scale not in SMALL_CONFIGS:
        raise ValueError(f"AUDIOCRAFT_MMD_GRID_SCALE={scale!r} is not a scale: use one of {sorted(SMALL_CONFIGS)}, "
                         "or leave it unset for the paper's")
    return SMALL_CONFIGS.get(scale)


def bind_base(launcher, paper_objective: tp.Optional[str] = 'paper_v1') -> None:
    """Bind the solver of the current scale and its SLURM resources on `launcher` (in place).

    Args:
        launcher: the grid's Dora launcher.
        paper_objective (str or None): at the paper's scale, the `mmd=` preset bound with the solver. The ablation
            grids were designed on `paper_v1` (samples normalizer, weight 100: what compression/encodec_mmd trained
            before it defaulted to the authors' objective), so their weights keep their meaning; None binds none:
            the solver's default, `authors`. The small scale binds none (its config's own preset, `small`).
    """
    if is_small():
        launcher.slurm_(gpus=1, mem_per_gpu=16)
        launcher.bind_(solver=small_config())
    else:
        launcher.slurm_(gpus=8, mem_per_gpu=40)
        launcher.bind_(solver='compression/encodec_mmd')
        if paper_objective is not None:
            launcher.bind_({'mmd': paper_objective})
