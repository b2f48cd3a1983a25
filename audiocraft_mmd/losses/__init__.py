"""Losses of audiocraft_mmd (torch-only; importing this package does not import AudioCraft)."""
from .independence import (ESTIMATORS, KERNELS, MEDIAN_MULTIPLIERS, align_delays,
                           independence_loss)

__all__ = ['independence_loss', 'KERNELS', 'ESTIMATORS', 'MEDIAN_MULTIPLIERS', 'align_delays']
