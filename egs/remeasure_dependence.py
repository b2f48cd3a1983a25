"""Re-measure trained XPs' codes on the evaluate split on the LM's tuples (MusicGen's delay pattern).

XPs of the same-frame ablation trained before `mmd.measure_pattern` existed logged their `codes_*` metrics on
same-frame tuples; this re-runs their evaluate stage (without ViSQOL) with the delay pattern's tuples:

    python egs/remeasure_dependence.py SIG [SIG ...]
"""
import sys

import torch

from audiocraft_mmd.train import get_solver_from_sig

KEYS = ['codes_tc', 'codes_tc_excess', 'codes_tc_norm', 'codes_mi_mean', 'codes_mi_mean_excess', 'codes_util_min']


def main(sigs) -> None:
    torch.set_num_threads(1)
    for sig in sigs:
        solver = get_solver_from_sig(sig, override_cfg={'mmd': {'measure_pattern': 'delay'}, 'device': 'cpu',
                                                        'evaluate': {'metrics': {'visqol': False}}})
        metrics = solver.run_stage('evaluate', solver.evaluate)
        print(f"| {sig} | " + ' | '.join(f'{float(metrics[k]):.3f}' for k in KEYS) + ' |', flush=True)


if __name__ == '__main__':
    print('| XP | ' + ' | '.join(KEYS) + ' |')
    main(sys.argv[1:])
