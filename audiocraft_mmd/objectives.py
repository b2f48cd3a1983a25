"""What each reading of the independence term weighs on a trained tokenizer: `python -m audiocraft_mmd.objectives SIG`.

The term has three streams (`mmd.stream`), two normalizers (`mmd.normalization`) and two readings of the paper's
kernel list (`mmd.bandwidth_unit`); their values differ by orders of magnitude, so a weight means nothing until it
is put next to the reconstruction losses. On `--batches` training batches of XP `SIG` (its last checkpoint), as one
macro batch the way the authors' schedule takes it, this prints:
- per stream and normalizer, with the paper's estimator and kernels: the value, the encoder-side gradient norm per
  unit weight, that norm over the one of AudioCraft's balanced reconstruction losses on one of those batches (the
  weight at which the term pulls the encoder as hard is its inverse), and the authors' weight 1000 in this
  project's units (samples normalizer, same stream);
- per kernel reading (the variances of the authors' code, the radii of the paper's text, and the median
  heuristic): each component's mean off-diagonal kernel value over the standardized joint samples, which tells
  whether a reading is blind (every pair near 0) or saturated (every pair near 1).
"""
import argparse
import sys
import typing as tp

import torch

from .losses import KERNELS, MEDIAN_MULTIPLIERS, independence_loss

# The three readings of the multi-scale Gaussian kernel compared: variances a of exp(-d / 2a).
NORMALIZERS = ('samples', 'clips')
AUTHORS_WEIGHT = 1000.


def _kernel_readings(median: float) -> tp.Dict[str, tp.List[float]]:
    paper = list(KERNELS['multiscale_gaussian'])
    return {'variance (authors\' code)': paper, 'radius (paper\'s text)': [s * s for s in paper],
            'median heuristic': [m * median for m in MEDIAN_MULTIPLIERS['multiscale_gaussian']]}


def _standardized_joint(streams: torch.Tensor, delays: tp.List[int], crop: int, rows: int) -> torch.Tensor:
    """Delay-aligned, standardized joint samples [N, K*D] (at most `rows`, strided), as the term sees them."""
    from .losses import align_delays
    x = align_delays(streams.detach().double(), delays, crop) if any(delays) else streams.detach().double()
    x = x.permute(0, 3, 1, 2).reshape(-1, x.shape[1] * x.shape[2])
    x = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    if len(x) > rows:
        x = x[torch.linspace(0, len(x) - 1, rows).round().long()]
    return x


def measure(sig: str, batches: int = 8, rows: int = 2048, seed: int = 0) -> tp.Dict[str, tp.Any]:
    """The measurements printed by the command line (see the module docstring).

    Args:
        sig (str): Dora signature of a compression_mmd XP.
        batches (int): training batches stacked into the macro batch (the authors took 32).
        rows (int): joint samples used for the kernel mass (strided).
        seed (int): seed of the permutations.
    Returns:
        {'clips', 'samples', 'rec_grad', 'terms': [{stream, normalization, value, grad_per_weight}],
         'median', 'kernel_mass': {reading: [(a, mean off-diagonal kernel value)]}}.
    """
    from .solvers.compression_mmd import STREAMS, _grad_norm_of, quantize_streams
    from .train import get_solver_from_sig
    solver = get_solver_from_sig(sig, override_cfg={'device': 'cpu', 'dataset': {'num_workers': 0}})
    solver.mmd_cfg.weight = 0.  # the hooks back-propagate nothing during the forward below
    model = solver.model
    params = list(model.encoder.parameters())
    loader = iter(solver.dataloaders['train'])
    audio = [next(loader).to(solver.device) for _ in range(batches)]
    # AudioCraft's balanced losses on one batch: the straight-through path exists in training mode only.
    model.train()
    solver._current_stage = 'train'
    qres = model(audio[0])
    losses = {name: criterion(qres.x, audio[0]) for name, criterion in solver.aux_losses.items()}
    _, rec_grad = _grad_norm_of(lambda: solver.balancer.backward(losses, qres.x), params)
    model.zero_grad(set_to_none=True)
    model.eval()  # quantize_streams has no side effects; eval keeps any dropout out of the encoder
    emb = torch.cat([model.encoder(model.preprocess(x)[0]) for x in audio], dim=0)
    delays = list(solver.delays)
    crop = len(delays)  # the authors' crop; with the default max(delays) crop, 1 step more per clip
    results = []
    for stream in STREAMS:
        streams, _ = quantize_streams(model.quantizer.vq, emb, stream)
        for normalization in NORMALIZERS:
            generator = torch.Generator().manual_seed(seed)
            value = independence_loss(streams, estimator='permutation', kernel='multiscale_gaussian',
                                      bandwidth='fixed', delays=delays, crop=crop, normalization=normalization,
                                      std_eps=1e-8, std_correction=1, clamp=False, generator=generator)
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norm = sum(float(g.double().square().sum()) for g in grads if g is not None) ** 0.5
            results.append({'stream': stream, 'normalization': normalization, 'value': float(value),
                            'grad_per_weight': norm})
    joint = _standardized_joint(quantize_streams(model.quantizer.vq, emb.detach(), 'residual')[0], delays, crop, rows)
    d = torch.cdist(joint, joint).square()
    off = ~torch.eye(len(joint), dtype=torch.bool)
    median = float(d[off].median())
    mass = {reading: [(a, float(torch.exp(-d[off] / (2 * a)).mean())) for a in variances]
            for reading, variances in _kernel_readings(median).items()}
    frames = emb.shape[-1] - crop
    return {'clips': emb.shape[0], 'samples': emb.shape[0] * frames, 'rec_grad': rec_grad, 'terms': results,
            'median': median, 'dim': joint.shape[1], 'kernel_mass': mass}


def format_report(sig: str, m: tp.Dict[str, tp.Any]) -> str:
    """Markdown tables of `measure`'s result."""
    lines = [f"XP {sig}: {m['clips']} clips, N = {m['samples']} delay-aligned rows (crop K); AudioCraft's balanced "
             f"losses give the encoder a gradient of norm {m['rec_grad']:.3g} on one batch.", '',
             '| stream | normalization | value | encoder grad / unit weight | / reconstruction\'s | weight for 1:1 | '
             'authors\' 1000 in samples units |', '|---|---|---|---|---|---|---|']
    by_key = {(t['stream'], t['normalization']): t for t in m['terms']}
    for t in m['terms']:
        ratio = t['grad_per_weight'] / max(m['rec_grad'], 1e-30)
        samples = by_key[(t['stream'], 'samples')]['grad_per_weight']
        transfer = (f"{AUTHORS_WEIGHT * t['grad_per_weight'] / samples:.3g}"
                    if t['normalization'] == 'clips' and samples > 0 else '')
        lines.append(f"| {t['stream']} | {t['normalization']} | {t['value']:.4g} | {t['grad_per_weight']:.3g} | "
                     f"{ratio:.3g} | {1 / ratio if ratio > 0 else float('inf'):.3g} | {transfer} |")
    lines += ['', f"Kernel mass: mean off-diagonal exp(-d / 2a) over {m['dim']}-dim standardized joint samples "
              f"(residual stream); median squared distance {m['median']:.4g}.", '',
              '| reading | a: mean kernel value |', '|---|---|']
    for reading, pairs in m['kernel_mass'].items():
        lines.append(f"| {reading} | " + ', '.join(f"{a:.4g}: {v:.2e}" for a, v in pairs) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.objectives', description=__doc__.split('\n')[0])
    parser.add_argument('sig', help="signature of a compression_mmd XP (a trained one)")
    parser.add_argument('--batches', type=int, default=8, help="training batches in the macro batch (authors: 32)")
    parser.add_argument('--rows', type=int, default=2048, help="joint samples for the kernel mass")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help="also write the report to this Markdown file")
    opts = parser.parse_args(argv)
    if opts.batches < 1:
        parser.error("--batches must be >= 1")
    report = format_report(opts.sig, measure(opts.sig, opts.batches, opts.rows, opts.seed))
    print(report, end='')
    if opts.out:
        with open(opts.out, 'w') as f:
            f.write(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
