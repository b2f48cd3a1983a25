"""Cost of the independence term per training step, against AudioCraft's own CompressionSolver in the same run.

    python bench/bench_compression_step.py                       # CPU, encodec_mmd_small_v2 (16 kHz, 4 x 256)
    python bench/bench_compression_step.py --paper --device cuda # the paper's scale: 32 kHz, 4 x 2048, batch 8, 1 s

Each variant builds its solver through the Dora main and times `run_step` (forward, balancer backward, the term,
optimizer step) on one fixed batch; the first steps are warm-up. Variants: AudioCraft's own CompressionSolver on the
same config (the reference row), weight 0 without and with the dead-code restart, the term at every step, the
paper's schedule (buffer N batches, re-encode, one term every N steps), and the authors' objective (`mmd=authors`:
residual streams, their normalizer, that schedule) at weight 0 and at their weight 1000. At small scale one more
row: weight 0 on `encodec_mmd_small`, the small config before issue 21 (l1 at 0.1 instead of 1), whose `vs weight 0`
column is v2's step cost against it.

A weight-0 step computes the term's value (no gradient) only every `mmd.log_every` steps, for its logs, and restarts
dead codes when `mmd.restart_dead_codes` says so (a training behaviour AudioCraft's solver does not have: the
`restart` column says which rows do it). Steps are timed in blocks of whole cycles (a multiple of `log_every` and of
the paper's N, so every block holds the same share of measured / cycle steps), and the variants take turns block by
block, so that a load change on a shared machine hits all of them alike. The ratios are medians over rounds of the
block mean against the AudioCraft block of the same round.
"""
import argparse
import math
import os
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


class Timed:
    """One variant: its solver, the fixed batch, and the seconds of each timed step per block."""

    def __init__(self, argv: tp.List[str], device: str, vanilla: bool = False):
        self.solver = _solver(argv, vanilla)
        self.solver.model.train()
        self.solver.rng = torch.Generator()
        self.solver.rng.manual_seed(0)
        self.solver._current_stage = 'train'  # what run_stage('train', ...) sets
        self.batch = next(iter(self.solver.dataloaders['train']))
        self.device = device
        self.idx = 0
        self.blocks: tp.List[tp.List[float]] = []

    def run(self, steps: int, record: bool = True) -> None:
        times = []
        for _ in range(steps):
            if self.device == 'cuda':
                torch.cuda.synchronize()
            begin = time.perf_counter()
            self.solver.run_step(self.idx, self.batch, {})
            if self.device == 'cuda':
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
            self.idx += 1
        if record:
            self.blocks.append(times)

    @property
    def times(self) -> tp.List[float]:
        return [t for block in self.blocks for t in block]


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--paper', action='store_true', help="paper scale (encodec_mmd, batch 8 per GPU)")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--steps', type=int, default=None,
                        help="timed steps per variant, rounded up to whole blocks (default: 3 blocks)")
    parser.add_argument('--paper_every', type=int, default=None)
    parser.add_argument('--log_every', type=int, default=10, help="mmd.log_every of every variant")
    parser.add_argument('--variants', type=lambda text: [t for t in text.split(',') if t], default=None,
                        metavar='TEXT,TEXT', help="time only the rows whose label contains one of these (AudioCraft's "
                        "row and the weight-0 baseline, the references of the ratios, always run), e.g. --variants v1")
    parser.add_argument('overrides', nargs='*', help="extra overrides for every variant, e.g. datasource.train=DIR")
    opts = parser.parse_args()
    every = opts.paper_every or (32 if opts.paper else 8)
    block = every * opts.log_every // math.gcd(every, opts.log_every)  # whole cycles of both
    rounds = max(1, math.ceil((opts.steps or 3 * block) / block))
    solver_name = 'compression/encodec_mmd' if opts.paper else 'compression/encodec_mmd_small_v2'
    base = [f'solver={solver_name}', f'device={opts.device}', 'dataset.num_workers=0', 'mmd.warmup.min_usage=0',
            'mmd.warmup.steps=0', f'mmd.log_every={opts.log_every}']
    if opts.paper:
        base += ['dataset.batch_size=8']
    base += opts.overrides
    vanilla = "AudioCraft's CompressionSolver"
    # This project's rows keep the objective they were designed on (encodec_mmd now defaults to mmd=authors).
    ours = base + (['mmd=paper_v1'] if opts.paper else [])
    variants = {
        vanilla: base,
        'weight 0, no restart': ours + ['mmd.weight=0', 'mmd.restart_dead_codes=false'],
        'weight 0 (baseline)': ours + ['mmd.weight=0'],
        'per step': ours + ['mmd.weight=100'],
        f'paper schedule (every {every})': ours + ['mmd.weight=100', 'mmd.schedule=paper', f'mmd.paper_every={every}'],
        'mmd=authors, weight 0': base + ['mmd=authors', 'mmd.weight=0'],
        f'mmd=authors (every {every})': base + ['mmd=authors', f'mmd.paper_every={every}'],
    }
    if not opts.paper:
        v1 = ['solver=compression/encodec_mmd_small'] + ours[1:]
        variants['weight 0, encodec_mmd_small (v1)'] = v1 + ['mmd.weight=0']
    if opts.variants:
        variants = {label: argv for label, argv in variants.items()
                    if label in (vanilla, 'weight 0 (baseline)') or any(text in label for text in opts.variants)}
    name = torch.cuda.get_device_name() if opts.device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    timed = {label: Timed(argv, opts.device, vanilla=label == vanilla) for label, argv in variants.items()}
    load_before = os.getloadavg()[0]
    for variant in timed.values():
        variant.run(every, record=False)  # warm-up
    labels = list(timed)
    for round_ in range(rounds):
        shift = round_ % len(labels)  # rotate who goes first
        for label in labels[shift:] + labels[:shift]:
            timed[label].run(block)
    load_after = os.getloadavg()[0]
    print(f"device: {name}; solver={solver_name}; {rounds} rounds x {block} timed steps per variant after {every} "
          f"warm-up steps; mmd.log_every={opts.log_every}; 1-min load average {load_before:.2f} before, "
          f"{load_after:.2f} after")

    def ratio(label: str, reference: str) -> float:
        ratios = [statistics.mean(ours) / statistics.mean(ref)
                  for ours, ref in zip(timed[label].blocks, timed[reference].blocks)]
        return 100 * (statistics.median(ratios) - 1)

    print('| variant | restart | median ms/step | mean ms/step | vs AudioCraft | vs weight 0 |')
    print('|---|---|---|---|---|---|')
    for label, variant in timed.items():
        times = variant.times
        restart = "AudioCraft's own (undone)" if label == vanilla else (
            'yes' if variant.solver.cfg.mmd.restart_dead_codes else 'no')
        print(f'| {label} | {restart} | {statistics.median(times) * 1e3:.1f} | '
              f'{statistics.mean(times) * 1e3:.1f} | {ratio(label, vanilla):+.1f}% | '
              f'{ratio(label, "weight 0 (baseline)"):+.1f}% |')


if __name__ == '__main__':
    main_cli()
