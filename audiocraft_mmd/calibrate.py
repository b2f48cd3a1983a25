"""Kernel scales for the kernel ablation: `python -m audiocraft_mmd.calibrate SIG [--batches N]`.

The paper rescales each kernel's term to about 1 on a baseline tokenizer so that one weight means the same for all
kernels. This loads a (weight-0) compression XP, encodes its valid set, averages the term of each kernel over the
batches, and prints `mmd.scale = 1 / value` per kernel, ready for `KERNEL_SCALES` in `grids/kernel_ablation.py`.
Each kernel is measured the way the kernel ablation trains it: the XP's delays, and its estimator and bandwidth
mode where the kernel supports them (`losses.kernel_options`), unclamped so that the average is unbiased.
"""
import argparse
import sys
import typing as tp

import torch

from .losses import KERNELS, independence_loss, kernel_options


def kernel_values(sig: str, batches: int = 8) -> tp.Dict[str, float]:
    """Mean term of each kernel over `batches` valid batches of XP `sig` (its last checkpoint).

    Args:
        sig (str): Dora signature of a compression_mmd XP.
        batches (int): number of valid batches to average over.
    Returns:
        Kernel name -> mean unscaled, unclamped value.
    """
    from .solvers.compression_mmd import quantize_streams
    from .train import get_solver_from_sig
    solver = get_solver_from_sig(sig, override_cfg={'device': 'cpu', 'dataset': {'num_workers': 0}})
    solver.model.eval()
    generator = torch.Generator().manual_seed(0)
    base = dict(solver.loss_options, scale=1., bandwidths=None, clamp=False, gather=False)
    sums = {kernel: 0. for kernel in KERNELS}
    count = 0
    with torch.no_grad():
        for idx, batch in enumerate(solver.dataloaders['valid']):
            if idx >= batches:
                break
            x, _ = solver.model.preprocess(batch.to(solver.device))
            streams, _ = quantize_streams(solver.model.quantizer.vq, solver.model.encoder(x))
            for kernel in KERNELS:
                options = dict(base, **kernel_options(kernel, base['estimator'], base['bandwidth']))
                sums[kernel] += float(independence_loss(streams, delays=solver.delays, generator=generator,
                                                        **options))
            count += 1
    if count == 0:
        raise RuntimeError(f"XP {sig} has an empty valid set.")
    return {kernel: total / count for kernel, total in sums.items()}


def kernel_scales(values: tp.Dict[str, float]) -> tp.Dict[str, float]:
    """`mmd.scale` per kernel: 1 / value, and 1 where the value is not positive (the linear kernel's MMD between
    a joint and the product of its marginals is identically 0: there is nothing to rescale)."""
    return {kernel: 1. / value if value > 0 else 1. for kernel, value in values.items()}


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.calibrate', description=__doc__.split('\n')[0])
    parser.add_argument('sig', help="signature of a weight-0 compression_mmd XP")
    parser.add_argument('--batches', type=int, default=8)
    opts = parser.parse_args(argv)
    values = kernel_values(opts.sig, opts.batches)
    scales = kernel_scales(values)
    print("{")
    for kernel, value in values.items():
        print(f"    {kernel!r}: {scales[kernel]:.4g},  # value {value:.4g} on {opts.sig}")
    print("}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
