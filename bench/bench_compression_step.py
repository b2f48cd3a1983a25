"""Cost of the independence term per training step, as a ratio to the weight-0 step measured in the same run.

    python bench/bench_compression_step.py                       # CPU, encodec_mmd_small (16 kHz, 4 x 256)
    python bench/bench_compression_step.py --paper --device cuda # the paper's scale: 32 kHz, 4 x 2048, batch 8, 1 s

Each variant builds the real CompressionMMDSolver through the Dora main and times `run_step` (forward, balancer
backward, the term, optimizer step) on one fixed batch; the first steps are warm-up. Variants: weight 0 (the term
measured but not back-propagated: the baseline), the term at every step, and the paper's schedule (buffer N
batches, re-encode, one term every N steps): its time is averaged over whole N-step cycles. The weight-0 step
still computes the term's value (no backward) for its logs, and restarts dead codes when the config says so; the
first row, AudioCraft's own CompressionSolver on the same config and batch, has neither.
"""
import argparse
import statistics
import time
import typing as tp

import torch

from audiocraft_mmd.train import get_solver, main


def _solver(argv: tp.List[str], vanilla: bool = False):
    xp = main.get_xp(argv)
    with xp.enter():
        if vanilla:  # AudioCraft's own solver on the same config (it ignores the `mmd:` node)
            from audiocraft.solvers.compression import CompressionSolver
            return CompressionSolver(xp.cfg)
        return get_solver(xp.cfg)


def time_steps(argv: tp.List[str], steps: int, warmup: int, device: str,
               vanilla: bool = False) -> tp.Tuple[float, float]:
    """Median and mean seconds per training step of the solver of `argv` on one fixed batch."""
    solver = _solver(argv, vanilla)
    solver.model.train()
    solver.rng = torch.Generator()
    solver.rng.manual_seed(0)
    solver._current_stage = 'train'  # what run_stage('train', ...) sets
    batch = next(iter(solver.dataloaders['train']))
    times = []
    for idx in range(warmup + steps):
        if device == 'cuda':
            torch.cuda.synchronize()
        begin = time.perf_counter()
        solver.run_step(idx, batch, {})
        if device == 'cuda':
            torch.cuda.synchronize()
        if idx >= warmup:
            times.append(time.perf_counter() - begin)
    return statistics.median(times), statistics.mean(times)


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--paper', action='store_true', help="paper scale (encodec_mmd, batch 8 per GPU)")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--steps', type=int, default=None, help="timed steps (default: 2 cycles of paper_every)")
    parser.add_argument('--paper_every', type=int, default=None)
    parser.add_argument('overrides', nargs='*', help="extra overrides for every variant, e.g. datasource.train=DIR")
    opts = parser.parse_args()
    every = opts.paper_every or (32 if opts.paper else 8)
    steps = opts.steps or 2 * every
    solver_name = 'compression/encodec_mmd' if opts.paper else 'compression/encodec_mmd_small'
    base = [f'solver={solver_name}', f'device={opts.device}', 'dataset.num_workers=0', 'mmd.warmup.min_usage=0',
            'mmd.warmup.steps=0']
    if opts.paper:
        base += ['dataset.batch_size=8']
    base += opts.overrides
    vanilla = "AudioCraft's CompressionSolver"
    variants = {
        vanilla: base,
        'weight 0 (baseline)': base + ['mmd.weight=0'],
        'per step': base + ['mmd.weight=100'],
        f'paper schedule (every {every})': base + ['mmd.weight=100', 'mmd.schedule=paper',
                                                   f'mmd.paper_every={every}'],
    }
    name = torch.cuda.get_device_name() if opts.device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f"device: {name}; solver={solver_name}; {steps} timed steps after {every} warm-up steps")
    results = {label: time_steps(argv, steps, every, opts.device, vanilla=label == vanilla)
               for label, argv in variants.items()}
    base_mean, vanilla_mean = results['weight 0 (baseline)'][1], results[vanilla][1]
    print('| variant | median ms/step | mean ms/step | mean vs weight 0 | mean vs AudioCraft |')
    print('|---|---|---|---|---|')
    for label, (median, mean) in results.items():
        print(f'| {label} | {median * 1e3:.1f} | {mean * 1e3:.1f} | {100 * (mean / base_mean - 1):+.1f}% '
              f'| {100 * (mean / vanilla_mean - 1):+.1f}% |')


if __name__ == '__main__':
    main_cli()
