"""Benchmark of the independence-loss estimators and of the discrete dependence metric.

Forward + backward time and peak memory of each estimator at N = B * T samples (K = 4 codebooks,
D = 128 dims, the MusicGen 32 kHz EnCodec layout), with the ratio to the permutation estimator
measured in the same run; then the time of ``codebook_dependence``-style accumulation over
180k frames x 4 codebooks x 2048 symbols on one thread.

Examples::

    python bench/bench_estimators.py --device cpu --sizes 2048,4096
    python bench/bench_estimators.py --device cuda            # 4096,11776,25600,51200

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around the measured call; on CPU each
measurement runs in a fresh subprocess and reports the growth of its max RSS (ru_maxrss) during
the call (so it includes allocator slack). Sizes predicted to exceed ``--max-seconds`` (from the
previous size, O(N^2) for permutation/dhsic and O(N) for rff) or the free memory are skipped
with a note. Not a test.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import typing as tp

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from audiocraft_mmd.losses import independence_loss  # noqa: E402
from audiocraft_mmd.metrics import CodebookDependence  # noqa: E402

K, D, T = 4, 128, 128
ESTIMATORS = ('permutation', 'dhsic', 'rff')
QUADRATIC = ('permutation', 'dhsic')


def make_streams(n: int, device: str, seed: int = 0) -> torch.Tensor:
    """[B, K, D, T] with B * T >= n (T = 128 frames; N is rounded up to a multiple of T)."""
    g = torch.Generator().manual_seed(seed)
    batch = max(1, -(-n // T))
    z = torch.randn(batch, 1, D, T, generator=g)
    x = 0.5 ** 0.5 * z + 0.5 ** 0.5 * torch.randn(batch, K, D, T, generator=g)
    return x.to(device)


def measure(estimator: str, n: int, device: str, repeats: int, num_features: int, bandwidth: str
            ) -> tp.Dict[str, float]:
    x = make_streams(n, device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        xx = x.detach().clone().requires_grad_(True)
        loss = independence_loss(xx, estimator=estimator, bandwidth=bandwidth, num_features=num_features,
                                 generator=gen)
        loss.backward()
        if device.startswith('cuda'):
            torch.cuda.synchronize()

    if device.startswith('cuda'):
        step()  # warm-up (kernels, allocator)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # Warm-up at a tiny size (first-call overheads) without touching the peak much.
        xx = make_streams(256, device).requires_grad_(True)
        independence_loss(xx, estimator=estimator, bandwidth=bandwidth, num_features=num_features).backward()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times.sort()
    return {'seconds': times[len(times) // 2], 'peak_bytes': float(max(0, peak))}


def measure_in_subprocess(args: argparse.Namespace, estimator: str, n: int) -> tp.Dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), '--_child', estimator, str(n), '--device', args.device,
           '--repeats', str(args.repeats), '--num-features', str(args.num_features),
           '--bandwidth', args.bandwidth, '--threads', str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_bytes(device: str) -> float:
    if device.startswith('cuda'):
        return float(torch.cuda.mem_get_info()[0])
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return float(line.split()[1]) * 1024
    return float('inf')


def device_name(device: str) -> str:
    if device.startswith('cuda'):
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, " \
           f"{os.cpu_count()} cores visible (torch {torch.__version__})"


def bench_estimators(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    if not sizes:
        return
    print(f"# device: {device_name(args.device)}")
    print(f"# K={K} D={D} T={T} kernel=multiscale_gaussian bandwidth={args.bandwidth} "
          f"rff num_features={args.num_features} repeats={args.repeats} (median reported)")
    print(f"{'N':>7} {'estimator':>12} {'fwd+bwd ms':>11} {'peak MiB':>9} {'x perm time':>11}")
    last: tp.Dict[str, tp.Tuple[int, tp.Dict[str, float]]] = {}
    notes = []
    for size in sizes:
        n = max(1, -(-size // T)) * T
        perm_time = None
        for est in ESTIMATORS:
            power = 2 if est in QUADRATIC else 1
            if est in last:
                n0, r0 = last[est]
                pred_t = r0['seconds'] * (n / n0) ** power
                pred_m = r0['peak_bytes'] * (n / n0)
                if pred_t > args.max_seconds or pred_m > 0.8 * free_bytes(args.device):
                    notes.append(f"skipped {est} at N={n}: predicted {pred_t:.1f} s / {pred_m / 2**20:.0f} MiB "
                                 f"(limit {args.max_seconds:.0f} s / 80% of free memory)")
                    print(f"{n:>7} {est:>12} {'skipped':>11}")
                    continue
            try:
                if args.device.startswith('cuda'):
                    r = measure(est, n, args.device, args.repeats, args.num_features, args.bandwidth)
                else:
                    r = measure_in_subprocess(args, est, n)
            except (RuntimeError, subprocess.CalledProcessError) as exc:  # OOM and friends
                notes.append(f"failed {est} at N={n}: {str(exc).splitlines()[0][:120]}")
                print(f"{n:>7} {est:>12} {'failed':>11}")
                if args.device.startswith('cuda'):
                    torch.cuda.empty_cache()
                continue
            last[est] = (n, r)
            if est == 'permutation':
                perm_time = r['seconds']
            ratio = f"{r['seconds'] / perm_time:.3f}" if perm_time else 'n/a'
            print(f"{n:>7} {est:>12} {1000 * r['seconds']:>11.1f} {r['peak_bytes'] / 2**20:>9.0f} {ratio:>11}",
                  flush=True)
    for note in notes:
        print('# ' + note)


def bench_metric(frames: int, batch_frames: int = 1000, per_update: int = 8) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batch = frames // batch_frames
    delays = [0, 1, 2, 3]
    # q_k[s] = c[s + d_k] with probability 0.3 (else uniform): the tuples the delay pattern
    # samples jointly, (q_1[t], q_2[t-1], q_3[t-2], q_4[t-3]), share c[t].
    base = torch.randint(0, 2048, (batch, batch_frames + max(delays)), generator=g)
    shared = torch.stack([base[:, d:d + batch_frames] for d in delays], dim=1)
    noise = torch.randint(0, 2048, (batch, K, batch_frames), generator=g)
    keep = torch.rand(batch, K, batch_frames, generator=g) < 0.3
    codes = torch.where(keep, shared, noise)
    t0 = time.perf_counter()
    metric = CodebookDependence(2048, K, delays=delays)
    for b in range(0, batch, per_update):
        metric.update(codes[b:b + per_update])
    t1 = time.perf_counter()
    result = metric.compute()
    t2 = time.perf_counter()
    metric.to_metrics()
    print(f"# codebook_dependence: {frames} frames x {K} codebooks x 2048 symbols, delays [0,1,2,3], "
          f"lagged copies with prob 0.3, 1 thread, updates of {per_update * batch_frames} frames")
    print(f"#   update total {t1 - t0:.2f} s, compute (incl. shuffled baseline) {t2 - t1:.2f} s, "
          f"total {t2 - t0:.2f} s; tc={result['tc']:.3f} tc_shuffled={result['tc_shuffled']:.3f} "
          f"mi_mean={result['mi_mean']:.3f} mi_mean_shuffled={result['mi_mean_shuffled']:.3f} "
          f"tc_undersampled={result['tc_undersampled']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--sizes', default='4096,11776,25600,51200',
                        help="comma separated N = B*T ('' to run only the metric bench)")
    parser.add_argument('--repeats', type=int, default=None, help='timed repeats (default 5 cuda, 1 cpu)')
    parser.add_argument('--num-features', type=int, default=2048)
    parser.add_argument('--bandwidth', default='median', choices=['fixed', 'median'])
    parser.add_argument('--max-seconds', type=float, default=None,
                        help='skip a size predicted to take longer per step (default 60 cpu, 20 cuda)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads on cpu')
    parser.add_argument('--metric-frames', type=int, default=180_000, help='0 to skip the metric bench')
    parser.add_argument('--_child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith('cuda')
    if args.repeats is None:
        args.repeats = 5 if cuda else 1
    if args.max_seconds is None:
        args.max_seconds = 20.0 if cuda else 60.0
    if args.threads is None:
        args.threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    if args._child:
        est, n = args._child[0], int(args._child[1])
        print(json.dumps(measure(est, n, args.device, args.repeats, args.num_features, args.bandwidth)))
        return
    print(f"# command: python {' '.join(sys.argv)}")
    bench_estimators(args)
    if args.metric_frames > 0:
        bench_metric(args.metric_frames)


if __name__ == '__main__':
    main()
