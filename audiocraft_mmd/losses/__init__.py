"""Losses of audiocraft_mmd (torch-only; importing this package does not import AudioCraft)."""
from .independence import (BANDWIDTH_MODES, ESTIMATORS, KERNELS, MEDIAN_MULTIPLIERS, NORMALIZATIONS, align_delays,
                           check_options, independence_loss, kernel_options)

__all__ = ['independence_loss', 'kernel_options', 'KERNELS', 'ESTIMATORS', 'BANDWIDTH_MODES', 'MEDIAN_MULTIPLIERS',
           'NORMALIZATIONS', 'align_delays', 'check_options']
