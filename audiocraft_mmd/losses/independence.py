"""Independence-promoting loss between the codebooks of a residual VQ (arXiv 2406.02315).

Per frame, a residual quantizer with ``K`` codebooks emits one continuous ``D``-dim vector per
codebook (AudioCraft layout ``[B, K, D, T]``). The loss measures how far the joint distribution of
the tuple ``(q_1, ..., q_K)`` is from the product of its marginals with a kernel two-sample
statistic (MMD^2). This module is torch-only (no AudioCraft import) so it can be unit-tested and
reused anywhere.

Estimators (``ESTIMATORS``):

* ``'permutation'`` -- the paper's estimator. Samples of the product of marginals are built by
  permuting each codebook's vectors independently over the flattened batch x time axis, then
  ``MMD^2 = U(K_xx) + U(K_yy) - 2 V(K_xy)`` (within-sample terms are U-statistics, i.e. the
  diagonal is removed; the cross term is a V-statistic), normalized by the number of samples,
  clamped at 0. Its V-statistic cross term makes it biased by -O(1/N) under independence.
* ``'dhsic'`` -- closed form, no permutation. For kernels that are products over codebooks
  (Gaussian kinds; a multi-scale Gaussian is a sum of them) it is the d-variable HSIC with every
  self pair removed (row means of the cross term exclude ``j = i``)::

      sum_s [ U(prod_k K_k^s) + prod_k U(K_k^s) - 2 mean_i prod_k mean_{j != i} K_k^s[i, j] ]

  which is exactly mean-zero when the codebooks are independent. Keeping ``j = i`` in the cross
  term instead gives exactly the expectation of the permutation estimator over permutations
  (``_dhsic(..., cross_self_pairs=True)``, checked by the tests). Linear and quadratic kernels
  have exact feature-space closed forms in O(N (KD)^2); the inverse quadratic kernel does not
  factorize over codebooks: use ``'permutation'`` or ``'rff'``.
* ``'rff'`` -- random Fourier features of the shift-invariant kernel on the concatenated vector.
  Because ``exp(i w.x) = prod_k exp(i w_k.x_k)``, the product-of-marginals embedding at a
  frequency ``w`` is exactly ``prod_k S_k(w_k)``, so no permutation is needed; all self pairs are
  removed analytically, so its expectation over the frequencies is the ``'dhsic'`` statistic (for
  the inverse quadratic kernel, a scale mixture of Gaussians, the same self-pair-free statistic).
  O(N * num_features) time, O(N + chunk * num_features) memory, analytic backward.

All estimators loop over row chunks, so memory is linear in N (permutation/dhsic time is O(N^2)).
See ``docs/estimators.md`` for the math and measured costs.
"""
import math
import typing as tp

import torch
import torch.distributed as dist

__all__ = ['independence_loss', 'align_delays', 'check_options', 'kernel_options', 'KERNELS', 'ESTIMATORS',
           'MEDIAN_MULTIPLIERS', 'NORMALIZATIONS']

# Kernel name -> default (paper) parameters used with ``bandwidth='fixed'``.
#  multiscale_gaussian: sum_a exp(-d / (2a)), a a variance; gaussian: exp(-d / (2a));
#  inverse_quadratic: sum_a a^2 / (a^2 + d); linear: <x, y>; quadratic: <x, y>^2.
# ``d`` is the squared Euclidean distance between two concatenated (K*D-dim) samples.
KERNELS: tp.Dict[str, tp.Tuple[float, ...]] = {
    'multiscale_gaussian': (0.1, 1.0, 5.0, 10.0, 20.0, 50.0),
    'gaussian': (120.0,),
    'inverse_quadratic': (12.0,),
    'linear': (),
    'quadratic': (),
}
# Kernel name -> default multipliers of the median squared distance with ``bandwidth='median'``:
# Gaussian kinds use ``a_s = m_s * median``; inverse quadratic uses ``a_s^2 = m_s * median``.
MEDIAN_MULTIPLIERS: tp.Dict[str, tp.Tuple[float, ...]] = {
    'multiscale_gaussian': (0.25, 0.5, 1.0, 2.0, 4.0),
    'gaussian': (1.0,),
    'inverse_quadratic': (1.0,),
}
ESTIMATORS: tp.Tuple[str, ...] = ('permutation', 'dhsic', 'rff')
# What the kernel sums are divided by. 'samples': the N = B x T' rows (a U/V-statistic, ~0 under independence).
# 'clips': the B clips, as the paper's authors' code (B(B-1) within, B^2 across, B subtracted for the diagonal):
# about (N/B)^2 x 'samples' plus a constant floor of 2 (N - B) / (B (B - 1)) per kernel component.
NORMALIZATIONS: tp.Tuple[str, ...] = ('samples', 'clips')
BANDWIDTH_MODES: tp.Tuple[str, ...] = ('fixed', 'median')

_GAUSSIAN_KINDS = ('multiscale_gaussian', 'gaussian')
_DISTANCE_KERNELS = ('multiscale_gaussian', 'gaussian', 'inverse_quadratic')
_STD_EPS = 1e-5           # default: added to the per-coordinate variance before the square root
_MEDIAN_MAX_SAMPLES = 1024  # samples used by the median heuristic (strided, deterministic)
# Max elements of one [rows, cols] temporary in the chunked loops (2^25 floats = 128 MiB; a
# chunk holds ~4-6 such temporaries). RFF chunks hold [K, rows, F] complex: budget 2^24 of them.
_CHUNK_ELEMENTS = 1 << 25
# On CPU, small chunks stay in cache and avoid page-faulting fresh 100 MiB buffers every chunk.
_CHUNK_ELEMENTS_CPU = 1 << 18


# ----------------------------------------------------------------------------------------------
# Public helpers
# ----------------------------------------------------------------------------------------------
def _check_names(kernel: str, estimator: str, bandwidth: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel '{kernel}', expected one of {tuple(KERNELS)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{estimator}', expected one of {ESTIMATORS}")
    if bandwidth not in BANDWIDTH_MODES:
        raise ValueError(f"unknown bandwidth mode '{bandwidth}', expected one of {BANDWIDTH_MODES}")


def kernel_options(kernel: str, estimator: str, bandwidth: str) -> tp.Dict[str, str]:
    """The estimator and bandwidth mode to use for `kernel`, closest to the preferred ones that support it.

    Used by the kernel ablation so that every kernel runs with the base setup where it can: the dhsic estimator
    has no closed form for the inverse quadratic kernel (rff estimates the same statistic), rff needs a
    shift-invariant kernel (dhsic is exact for linear/quadratic), and the median bandwidth applies to distance
    kernels only (linear/quadratic have no bandwidth).

    Args:
        kernel (str): one of ``KERNELS``.
        estimator (str): preferred estimator, one of ``ESTIMATORS``.
        bandwidth (str): preferred bandwidth mode, one of ``BANDWIDTH_MODES``.
    Returns:
        ``{'kernel': ..., 'estimator': ..., 'bandwidth': ...}``, keyword arguments of ``independence_loss``.
    """
    _check_names(kernel, estimator, bandwidth)
    if kernel not in _DISTANCE_KERNELS:
        bandwidth = 'fixed'
        if estimator == 'rff':
            estimator = 'dhsic'
    elif kernel == 'inverse_quadratic' and estimator == 'dhsic':
        estimator = 'rff'
    return {'kernel': kernel, 'estimator': estimator, 'bandwidth': bandwidth}


def _check_delays(delays: tp.Optional[tp.Sequence[int]], num_codebooks: int,
                  num_frames: int) -> tp.Optional[tp.List[int]]:
    if delays is None:
        return None
    try:
        delays_list = [int(d) for d in delays]
    except (TypeError, ValueError):
        raise ValueError(f"delays must be a sequence of {num_codebooks} non-negative ints, got {delays!r}")
    if any(float(d) != float(o) for d, o in zip(delays_list, delays)):
        raise ValueError(f"delays must be integers, got {list(delays)!r}")
    if len(delays_list) != num_codebooks:
        raise ValueError(f"expected {num_codebooks} delays (one per codebook), got {len(delays_list)}: "
                         f"{delays_list}")
    if any(d < 0 for d in delays_list):
        raise ValueError(f"delays must be non-negative, got {delays_list}")
    if max(delays_list) >= num_frames:
        raise ValueError(f"max(delays)={max(delays_list)} must be < the number of frames T={num_frames} "
                         "(the aligned sequence would be empty)")
    return delays_list


def align_delays(streams: torch.Tensor, delays: tp.Sequence[int], crop: tp.Optional[int] = None) -> torch.Tensor:
    """Regroup a ``[B, K, ..., T]`` tensor into the tuples a delay pattern samples jointly.

    MusicGen's delay pattern emits ``(q_1[t - d_1], ..., q_K[t - d_K])`` in one decoding step. The
    output at aligned index ``j`` holds, for codebook ``k``, the frame ``t - d_k`` with
    ``t = j + crop``, i.e. ``out[:, k, ..., j] = streams[:, k, ..., j + crop - d_k]`` for
    ``j in [0, T - crop)``: the steps ``t < crop`` are dropped. ``crop=None`` is ``max(delays)``, the
    first step without a padded frame; the authors' code drops ``K`` steps (one more for MusicGen's
    delays). Works for continuous streams ``[B, K, D, T]`` and for codes ``[B, K, T]``. Returns a new
    tensor (a stack of views' copies); the input is not modified. Gradients flow through.
    """
    if not isinstance(streams, torch.Tensor) or streams.dim() < 3:
        raise ValueError("align_delays expects a tensor [B, K, ..., T] with at least 3 dims, got "
                         f"{getattr(streams, 'shape', type(streams))}")
    num_codebooks, num_frames = streams.shape[1], streams.shape[-1]
    delays_list = _check_delays(delays, num_codebooks, num_frames)
    assert delays_list is not None
    start = _check_crop(crop, delays_list, num_frames)
    length = num_frames - start
    parts = [streams[:, k, ..., start - d: start - d + length] for k, d in enumerate(delays_list)]
    return torch.stack(parts, dim=1)


def _check_crop(crop: tp.Optional[int], delays: tp.Sequence[int], num_frames: int) -> int:
    if crop is None:
        return max(delays)
    if int(crop) != crop or not max(delays) <= int(crop) < num_frames:
        raise ValueError(f"crop={crop!r} must be an int in [max(delays), T) = [{max(delays)}, {num_frames}): the "
                         "steps before it are dropped (max(delays) drops exactly those with a padded frame)")
    return int(crop)


# ----------------------------------------------------------------------------------------------
# Distance-kernel row sums, O(N) memory (chunked forward, recomputing backward)
# ----------------------------------------------------------------------------------------------
def _profile(kind: str, param: float, d: torch.Tensor) -> torch.Tensor:
    if kind == 'gauss':   # param = 1 / (2 a)
        return torch.exp(-param * d)
    return param / (param + d)  # 'iq', param = a^2


def _profile_grad(kind: str, param: float, d: torch.Tensor) -> torch.Tensor:
    if kind == 'gauss':
        return -param * torch.exp(-param * d)
    return -param / (param + d).square()


def _chunk_rows(n_cols: int, device: torch.device) -> int:
    budget = _CHUNK_ELEMENTS_CPU if device.type == 'cpu' else _CHUNK_ELEMENTS
    return max(1, budget // max(1, n_cols))


def _sq_dist_chunk(xc: torch.Tensor, sq_xc: torch.Tensor, y: torch.Tensor, sq_y: torch.Tensor,
                   r0: int, zero_diag: bool) -> torch.Tensor:
    d = torch.addmm(sq_xc[:, None] + sq_y[None, :], xc, y.t(), beta=1.0, alpha=-2.0).clamp_min_(0.0)
    if zero_diag:
        rows = torch.arange(xc.shape[0], device=xc.device)
        d[rows, rows + r0] = 0.0
    return d


class _KernelRowSums(torch.autograd.Function):
    """``out[s, i] = sum_j f_s(||x_i - y_j||^2)`` without keeping any N x M matrix for backward.

    ``zero_diag`` (x and y are the same samples) treats ``d_ii`` as exactly 0 and sends no gradient
    through it. Forward and backward loop over row chunks, so memory is O((N + M) * chunk).
    """

    @staticmethod
    def forward(ctx, x, y, kind: str, params: tp.Tuple[float, ...], zero_diag: bool):  # type: ignore
        ctx.save_for_backward(x, y)
        ctx.kind, ctx.params, ctx.zero_diag = kind, params, zero_diag
        n = x.shape[0]
        out = x.new_empty(len(params), n)
        sq_x, sq_y = x.square().sum(1), y.square().sum(1)
        step = _chunk_rows(y.shape[0], x.device)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            d = _sq_dist_chunk(x[r0:r1], sq_x[r0:r1], y, sq_y, r0, zero_diag)
            for s, p in enumerate(params):
                out[s, r0:r1] = _profile(kind, p, d).sum(1)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore
        x, y = ctx.saved_tensors
        kind, params, zero_diag = ctx.kind, ctx.params, ctx.zero_diag
        n, m = x.shape[0], y.shape[0]
        sq_x, sq_y = x.square().sum(1), y.square().sum(1)
        grad_x = torch.empty_like(x)
        col_w = x.new_zeros(m)
        wt_x = torch.zeros_like(y)
        step = _chunk_rows(m, x.device)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            xc = x[r0:r1]
            d = _sq_dist_chunk(xc, sq_x[r0:r1], y, sq_y, r0, zero_diag)
            w = torch.zeros_like(d)
            for s, p in enumerate(params):
                w.add_(_profile_grad(kind, p, d) * grad_out[s, r0:r1, None])
            if zero_diag:
                rows = torch.arange(r1 - r0, device=x.device)
                w[rows, rows + r0] = 0.0
            grad_x[r0:r1] = 2.0 * (w.sum(1)[:, None] * xc - w @ y)
            col_w.add_(w.sum(0))
            wt_x.add_(w.t() @ xc)
        grad_y = 2.0 * (col_w[:, None] * y - wt_x)
        return grad_x, grad_y, None, None, None


def _kernel_row_sums(x: torch.Tensor, y: torch.Tensor, kind: str, params: tp.Sequence[float],
                     zero_diag: bool = False) -> torch.Tensor:
    return _KernelRowSums.apply(x, y, kind, tuple(float(p) for p in params), zero_diag)


# ----------------------------------------------------------------------------------------------
# Estimators. ``x`` is always [N, K, D] (standardized samples of the joint).
# ----------------------------------------------------------------------------------------------
def _kernel_profile(kernel: str, params: tp.Sequence[float]) -> tp.Tuple[str, tp.Tuple[float, ...]]:
    """Map kernel params (variances a / IQ scales a) to the row-sum profile parameters."""
    if kernel in _GAUSSIAN_KINDS:
        return 'gauss', tuple(1.0 / (2.0 * float(a)) for a in params)
    return 'iq', tuple(float(a) ** 2 for a in params)


def _randperm(n: int, device: torch.device, generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


def _product_of_marginals(x: torch.Tensor, generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    n, k = x.shape[0], x.shape[1]
    return torch.stack([x[_randperm(n, x.device, generator), i] for i in range(k)], dim=1)


def _permutation_mmd(x: torch.Tensor, kernel: str, params: tp.Sequence[float],
                     generator: tp.Optional[torch.Generator], clips: tp.Optional[int] = None) -> torch.Tensor:
    """The permutation estimator; with `clips` (the number of clips B), the authors' normalization by clips."""
    n = x.shape[0]
    y = _product_of_marginals(x, generator)
    zx, zy = x.reshape(n, -1), y.reshape(n, -1)
    pairs = n * (n - 1)
    if kernel in _DISTANCE_KERNELS:
        kind, prof = _kernel_profile(kernel, params)
        # f(0) = 1 for every Gaussian / IQ component: the within sums hold n * len(prof) from their diagonals.
        sum_xx = _kernel_row_sums(zx, zx, kind, prof, zero_diag=True).sum()
        sum_yy = _kernel_row_sums(zy, zy, kind, prof, zero_diag=True).sum()
        sum_xy = _kernel_row_sums(zx, zy, kind, prof).sum()
        if clips is not None:
            # The authors': B clips stand for the samples, B (not n) subtracted for the diagonal.
            diag, within, across = float(clips * len(prof)), clips * (clips - 1), clips * clips
        else:
            diag, within, across = float(n * len(prof)), pairs, n * n
        return (sum_xx - diag) / within + (sum_yy - diag) / within - 2.0 * sum_xy / across
    assert clips is None, "the clips normalization applies to distance kernels only"
    # Feature-space closed forms of the same three sums, O(N (KD)^2), no N x N matrix.
    if kernel == 'linear':
        sx, sy = zx.sum(0), zy.sum(0)
        u_xx = (sx.dot(sx) - zx.square().sum()) / pairs
        u_yy = (sy.dot(sy) - zy.square().sum()) / pairs
        v_xy = sx.dot(sy) / (n * n)
        return u_xx + u_yy - 2.0 * v_xy
    assert kernel == 'quadratic'
    a, b = zx.t() @ zx, zy.t() @ zy
    u_xx = (a.square().sum() - zx.square().sum(1).square().sum()) / pairs
    u_yy = (b.square().sum() - zy.square().sum(1).square().sum()) / pairs
    v_xy = (a * b).sum() / (n * n)
    return u_xx + u_yy - 2.0 * v_xy


def _dhsic(x: torch.Tensor, kernel: str, params: tp.Sequence[float],
           cross_self_pairs: bool = False) -> torch.Tensor:
    """Closed-form dHSIC-type statistic (no permutation).

    Default (``cross_self_pairs=False``): the self pair ``j = i`` is removed from the row means of
    the cross term as well, which makes the statistic exactly mean-zero under independence (all
    three terms are then unbiased for their population values when the K codebooks are
    independent). ``cross_self_pairs=True`` keeps it, giving exactly the expectation of the
    paper's permutation estimator over uniformly random permutations (which is biased by
    -O(1/N) under independence); used by the tests to check the permutation estimator.
    """
    n, num_codebooks = x.shape[0], x.shape[1]
    pairs = n * (n - 1)
    if kernel in _GAUSSIAN_KINDS:
        kind, prof = _kernel_profile(kernel, params)
        # A sum of Gaussians is a sum of product kernels: each scale contributes its own dHSIC.
        joint = _kernel_row_sums(x.reshape(n, -1), x.reshape(n, -1), kind, prof, zero_diag=True)  # [S, N]
        u_joint = (joint.sum(1) - n) / pairs                                                      # [S]
        prod_u = x.new_ones(len(prof))
        prod_rowmean = x.new_ones(len(prof), n)
        for k in range(num_codebooks):
            xk = x[:, k]
            rows = _kernel_row_sums(xk, xk, kind, prof, zero_diag=True)    # [S, N], K_k[i, i] = 1
            prod_u = prod_u * ((rows.sum(1) - n) / pairs)
            rowmean = rows / n if cross_self_pairs else (rows - 1.0) / (n - 1)
            prod_rowmean = prod_rowmean * rowmean
        return (u_joint + prod_u - 2.0 * prod_rowmean.mean(1)).sum()
    if kernel in ('linear', 'quadratic'):
        # <x, y>^2 = sum_{k,l} <x_k, y_k><x_l, y_l>: a sum of product kernels over <= 2 codebooks;
        # <x, y> = sum_k <x_k, y_k>: a sum of single-codebook kernels. For a single-codebook term
        # the statistic is 2 U - 2 (cross): identically 0 without self pairs.
        z = x.reshape(n, -1)
        dim = x.shape[2]
        sq = x.square().sum(2)                                      # [N, K] squared norms
        s = x.sum(0)                                                # [K, D]
        u_lin = (s.square().sum(1) - sq.sum(0)) / pairs             # [K] U-stat of the linear Gram
        dots = (x * s[None]).sum(2)                                 # [N, K] <x_ik, s_k>
        r = dots / n if cross_self_pairs else (dots - sq) / (n - 1)  # row means of the linear Gram
        if kernel == 'linear':
            if not cross_self_pairs:
                return (z * 0.0).sum()
            return (2.0 * u_lin - 2.0 * r.mean(0)).sum()
        gram = z.t() @ z                                            # [KD, KD], block (k, l) = X_k^T X_l
        total = x.new_zeros(())
        for k in range(num_codebooks):
            for l in range(num_codebooks):
                block = gram[k * dim:(k + 1) * dim, l * dim:(l + 1) * dim]
                t_kl = block.square().sum()                         # sum_ij G_k[i,j] G_l[i,j]
                diag_kl = (sq[:, k] * sq[:, l]).sum()
                u_kl = (t_kl - diag_kl) / pairs
                if k == l:
                    if cross_self_pairs:
                        total = total + 2.0 * u_kl - 2.0 * t_kl / (n * n)
                else:
                    total = total + u_kl + u_lin[k] * u_lin[l] - 2.0 * (r[:, k] * r[:, l]).mean()
        return total
    raise ValueError(f"estimator='dhsic' has no closed form for kernel='{kernel}' (it does not "
                     "factorize over codebooks); use estimator='permutation' or estimator='rff'")


def _rff_frequencies(kernel: str, params: tp.Sequence[float], num_features: int, num_codebooks: int,
                     dim: int, device: torch.device, dtype: torch.dtype,
                     generator: tp.Optional[torch.Generator]) -> tp.Tuple[torch.Tensor, tp.List[int]]:
    """Frequencies [F, K, D] (F = sum of per-component counts) of the kernel's spectral measure."""
    per = max(1, num_features // len(params))
    gen_device = generator.device if generator is not None else device
    g = torch.randn(per * len(params), num_codebooks, dim, generator=generator, device=gen_device,
                    dtype=torch.float64)
    scales = []
    for a in params:
        if kernel in _GAUSSIAN_KINDS:  # exp(-d / 2a): w ~ N(0, I / a)
            scales.append(torch.full((per,), 1.0 / math.sqrt(a), dtype=torch.float64, device=gen_device))
        else:  # a^2 / (a^2 + d) = E_t exp(-t d), t ~ Exp(rate a^2); w | t ~ N(0, 2t I)
            u = torch.rand(per, generator=generator, device=gen_device, dtype=torch.float64)
            t = -torch.log1p(-u) / (float(a) ** 2)
            scales.append(torch.sqrt(2.0 * t))
    w = g * torch.cat(scales)[:, None, None]
    return w.to(device=device, dtype=dtype), [per] * len(params)


def _excluded_products(a: torch.Tensor) -> torch.Tensor:
    """``out[k] = prod_{l != k} a[l]`` along dim 0 (prefix/suffix products, no division)."""
    num = a.shape[0]
    prefix = [torch.ones_like(a[0])]
    for k in range(num - 1):
        prefix.append(prefix[-1] * a[k])
    out = [None] * num
    suffix = torch.ones_like(a[0])
    for k in range(num - 1, -1, -1):
        out[k] = prefix[k] * suffix
        suffix = suffix * a[k]
    return torch.stack(out)  # type: ignore


class _RFFStat(torch.autograd.Function):
    """sum_f coef_f * est_f(w_f) for frequencies w [F, K, D]; O(chunk * K * F) memory.

    Notation per frequency: e_ik = exp(i w_k . x_ik), S_k = sum_i e_ik, J = sum_i prod_k e_ik,
    A_ik = e_ik conj(S_k) - 1 (= sum_{j != i} exp(i w_k . (x_ik - x_jk))), Q = Re sum_i prod_k A_ik:

      est = (|J|^2 - n) / (n(n-1)) + prod_k (|S_k|^2 - n) / (n(n-1)) - 2 Q / (n (n-1)^K)

    Forward: pass 1 accumulates S_k, pass 2 accumulates J, Q and R_k = sum_i e_ik prod_{l!=k} A_il
    (dQ/dS_k). Backward: one more pass recomputes the phases and applies the analytic gradient.
    """

    @staticmethod
    def _phases(xc: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.bmm(xc.transpose(0, 1), w.permute(1, 2, 0))          # [K, c, F]

    @staticmethod
    def _expi(phase: torch.Tensor) -> torch.Tensor:
        return torch.polar(torch.ones_like(phase), phase)

    @staticmethod
    def forward(ctx, x, w, coef):  # type: ignore
        n, num_codebooks, _ = x.shape
        num_freq = w.shape[0]
        step = _chunk_rows(2 * num_freq * num_codebooks, x.device)
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        s = torch.zeros(num_codebooks, num_freq, dtype=cdtype, device=x.device)
        for r0 in range(0, n, step):
            s += _RFFStat._expi(_RFFStat._phases(x[r0:r0 + step], w)).sum(1)
        conj_s = s.conj()[:, None, :]
        j = torch.zeros(num_freq, dtype=cdtype, device=x.device)
        q = torch.zeros(num_freq, dtype=x.dtype, device=x.device)
        r = torch.zeros(num_codebooks, num_freq, dtype=cdtype, device=x.device)
        for r0 in range(0, n, step):
            e = _RFFStat._expi(_RFFStat._phases(x[r0:r0 + step], w))          # [K, c, F]
            j += e.prod(0).sum(0)
            a = e * conj_s - 1.0
            excl = _excluded_products(a)
            q += (a[0] * excl[0]).real.sum(0)
            r += (e * excl).sum(1)
        pairs = n * (n - 1)
        u_k = (s.abs().square() - n) / pairs                                  # [K, F]
        est = (j.abs().square() - n) / pairs + u_k.prod(0) - 2.0 * q / (n * float(n - 1) ** num_codebooks)
        ctx.save_for_backward(x, w, coef, s, j, r, u_k)
        return (coef * est).sum()

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore
        x, w, coef, s, j, r, u_k = ctx.saved_tensors
        n, num_codebooks, _ = x.shape
        num_freq = w.shape[0]
        pairs = n * (n - 1)
        c = grad_out * coef                                                   # [F]
        q_scale = -2.0 / (n * float(n - 1) ** num_codebooks)
        g_j = c * 2.0 * j / pairs                                             # dL/d(Re J) + i dL/d(Im J)
        g_s = c * (_excluded_products(u_k) * 2.0 * s / pairs + q_scale * r)   # [K, F], same convention
        c_q = c * q_scale                                                     # [F]
        conj_s = s.conj()[:, None, :]
        grad_x = torch.empty_like(x)
        step = _chunk_rows(2 * num_freq * num_codebooks, x.device)
        w_kfd = w.permute(1, 0, 2)                                            # [K, F, D]
        for r0 in range(0, n, step):
            e = _RFFStat._expi(_RFFStat._phases(x[r0:r0 + step], w))          # [K, c, F]
            joint = e.prod(0)                                                 # [c, F]
            a = e * conj_s - 1.0
            excl = _excluded_products(a)
            # d/dphi of Re(conj(g) * exp(i phi)) = Re(conj(g) * i e) = -Im(conj(g) * e)
            d_phi = -(g_s.conj()[:, None, :] * e).imag - (g_j.conj()[None, :] * joint).imag[None]
            d_phi = d_phi - c_q * ((a + 1.0) * excl).imag                     # direct Q term
            grad_x[r0:r0 + step] = torch.bmm(d_phi, w_kfd).transpose(0, 1)
        return grad_x, None, None


def _rff(x: torch.Tensor, kernel: str, params: tp.Sequence[float], num_features: int,
         generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    """Unbiased (over the frequencies) RFF estimate of the ``'dhsic'`` statistic, O(N F) time."""
    n, num_codebooks, dim = x.shape
    w, counts = _rff_frequencies(kernel, params, num_features, num_codebooks, dim, x.device, x.dtype,
                                 generator)
    coef = torch.cat([torch.full((c,), 1.0 / c, dtype=x.dtype, device=x.device) for c in counts])
    return _RFFStat.apply(x, w, coef)


# ----------------------------------------------------------------------------------------------
# Sample preparation
# ----------------------------------------------------------------------------------------------
def _gather_samples(x: torch.Tensor) -> torch.Tensor:
    """all_gather along dim 0 across ranks (variable sizes allowed); the local part keeps its grad."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    world = dist.get_world_size()
    if world <= 1:
        return x
    rank = dist.get_rank()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(counts),) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x.detach()
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    parts = [x if i == rank else buffers[i][:counts[i]] for i in range(world)]
    return torch.cat(parts, dim=0)


def _median_sq_distance(z: torch.Tensor) -> float:
    """Median of the off-diagonal squared distances of (at most 1024 strided) joint samples."""
    with torch.no_grad():
        n = z.shape[0]
        if n > _MEDIAN_MAX_SAMPLES:
            idx = torch.linspace(0, n - 1, _MEDIAN_MAX_SAMPLES, device=z.device).round().long()
            z = z[idx]
        z = z.double()
        d = torch.cdist(z, z).square()
        iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
        med = float(d[iu[0], iu[1]].median().item()) if z.shape[0] > 1 else 0.0
    return med if med > 1e-12 else 1.0


def _resolve_params(kernel: str, bandwidths: tp.Optional[tp.Sequence[float]], bandwidth: str,
                    x: torch.Tensor) -> tp.Tuple[float, ...]:
    if kernel not in _DISTANCE_KERNELS:
        if bandwidth != 'fixed':
            raise ValueError(f"bandwidth='{bandwidth}' only applies to distance kernels "
                             f"{_DISTANCE_KERNELS}; kernel='{kernel}' has no bandwidth")
        if bandwidths is not None and len(bandwidths) > 0:
            raise ValueError(f"kernel='{kernel}' takes no bandwidths, got {list(bandwidths)}")
        return ()
    if bandwidths is None:
        values = KERNELS[kernel] if bandwidth == 'fixed' else MEDIAN_MULTIPLIERS[kernel]
    else:
        values = tuple(float(b) for b in bandwidths)
    if len(values) == 0 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive finite floats, got {values}")
    if kernel == 'gaussian' and len(values) != 1:
        raise ValueError(f"kernel='gaussian' takes exactly one bandwidth, got {values}; "
                         "use kernel='multiscale_gaussian' for several")
    if bandwidth == 'fixed':
        return tuple(values)
    med = _median_sq_distance(x.reshape(x.shape[0], -1))
    if kernel in _GAUSSIAN_KINDS:
        return tuple(m * med for m in values)                 # variances a_s = m_s * median
    return tuple(math.sqrt(m * med) for m in values)          # IQ: a_s^2 = m_s * median


def check_options(*, estimator: str = 'permutation', kernel: str = 'multiscale_gaussian', bandwidth: str = 'fixed',
                  scale: float = 1.0, max_samples: tp.Optional[int] = None, num_features: int = 2048,
                  normalization: str = 'samples', gather: bool = False, std_eps: float = _STD_EPS,
                  std_correction: int = 0) -> None:
    """Check a combination of ``independence_loss`` options without data (e.g. a config, at start).

    Args: as ``independence_loss``.
    Raises:
        ValueError: unknown names, or a combination that has no meaning; the message names the options.
    """
    _check_names(kernel, estimator, bandwidth)
    if estimator == 'dhsic' and kernel == 'inverse_quadratic':
        raise ValueError("estimator='dhsic' has no closed form for kernel='inverse_quadratic' (it does "
                         "not factorize over codebooks); use estimator='permutation' or estimator='rff'")
    if estimator == 'rff' and kernel not in _DISTANCE_KERNELS:
        raise ValueError(f"estimator='rff' needs a shift-invariant kernel {_DISTANCE_KERNELS}, got "
                         f"kernel='{kernel}'; use estimator='dhsic' (exact and already O(N) for it)")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite float, got {scale}")
    if max_samples is not None and int(max_samples) < 2:
        raise ValueError(f"max_samples must be None or >= 2, got {max_samples}")
    if int(num_features) < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization '{normalization}', expected one of {NORMALIZATIONS}")
    if normalization == 'clips':
        # The authors' normalizer counts clips and subtracts one f(0) = 1 per clip: it is defined for their
        # estimator, on kernels with f(0) = 1, over the clips of one call.
        if estimator != 'permutation' or kernel not in _DISTANCE_KERNELS:
            raise ValueError(f"normalization='clips' (the authors') needs estimator='permutation' and a distance "
                             f"kernel {_DISTANCE_KERNELS}, got estimator='{estimator}', kernel='{kernel}'; use "
                             "normalization='samples' with other estimators and kernels")
        if max_samples is not None or gather:
            raise ValueError("normalization='clips' divides by the clips of one call: it cannot be combined with "
                             "max_samples (a subset of rows) or gather (rows of other workers); use "
                             "normalization='samples'")
    if not (math.isfinite(float(std_eps)) and float(std_eps) > 0):
        raise ValueError(f"std_eps must be a positive finite float, got {std_eps}")
    if std_correction not in (0, 1):
        raise ValueError(f"std_correction must be 0 (biased variance) or 1 (unbiased, torch.var's default), "
                         f"got {std_correction}")


def _validate(streams: torch.Tensor, **options: tp.Any) -> None:
    if not isinstance(streams, torch.Tensor):
        raise ValueError(f"streams must be a torch.Tensor [B, K, D, T], got {type(streams).__name__}")
    if not streams.is_floating_point():
        raise ValueError(f"streams must be a floating point tensor [B, K, D, T], got dtype {streams.dtype}")
    if streams.dim() != 4:
        raise ValueError(f"streams must have shape [B, K, D, T] (4 dims), got {tuple(streams.shape)}")
    if streams.shape[1] < 2:
        raise ValueError(f"need K >= 2 codebooks to measure dependence, got K={streams.shape[1]} "
                         f"(shape {tuple(streams.shape)})")
    if min(streams.shape) < 1:
        raise ValueError(f"streams must be non-empty, got shape {tuple(streams.shape)}")
    check_options(**options)


def independence_loss(streams: torch.Tensor, *, estimator: str = 'permutation',
                      kernel: str = 'multiscale_gaussian',
                      bandwidths: tp.Optional[tp.Sequence[float]] = None,
                      bandwidth: str = 'fixed',
                      scale: float = 1.0,
                      delays: tp.Optional[tp.Sequence[int]] = None,
                      standardize: bool = True, max_samples: tp.Optional[int] = None,
                      num_features: int = 2048,
                      generator: tp.Optional[torch.Generator] = None,
                      gather: bool = False,
                      clamp: bool = True,
                      normalization: str = 'samples',
                      crop: tp.Optional[int] = None,
                      std_eps: float = _STD_EPS,
                      std_correction: int = 0) -> torch.Tensor:
    """MMD^2 between the joint of the K codebook vectors and the product of their marginals.

    Args:
        streams: ``[B, K, D, T]`` float tensor, one D-dim vector per codebook and frame (K >= 2).
            Half precision inputs are computed in float32; float64 stays float64.
        estimator: one of ``ESTIMATORS``: ``'permutation'`` (paper), ``'dhsic'`` (closed-form
            expectation of the permutation estimator; Gaussian kinds, linear, quadratic) or
            ``'rff'`` (random Fourier features, O(N * num_features); Gaussian kinds and inverse
            quadratic).
        kernel: one of ``KERNELS``: ``'multiscale_gaussian'`` (sum_a exp(-d/2a)), ``'gaussian'``,
            ``'inverse_quadratic'`` (sum_a a^2/(a^2+d)), ``'linear'`` (<x,y>), ``'quadratic'``
            (<x,y>^2); d is the squared distance between concatenated K*D-dim samples.
        bandwidths: with ``bandwidth='fixed'`` the kernel parameters (``None``: ``KERNELS[kernel]``,
            the paper's); with ``bandwidth='median'`` multipliers of the median squared distance
            (``None``: ``MEDIAN_MULTIPLIERS[kernel]``). Must be None/empty for linear/quadratic.
        bandwidth: ``'fixed'`` or ``'median'`` (data-driven: the median ``med`` of the detached
            squared distances between at most 1024 strided joint samples; Gaussian variances
            ``a_s = m_s * med``, inverse quadratic ``a_s^2 = m_s * med``).
        scale: factor multiplied into the result (to bring each kernel to ~1 on a baseline).
        delays: per-codebook delays; the statistic is computed on the tuples the delay pattern
            samples jointly, see ``align_delays``. ``None``: no alignment.
        crop: with ``delays``, the number of leading steps of the delayed sequence dropped
            (``None``: ``max(delays)``; the authors' code drops ``K``), see ``align_delays``.
        standardize: standardize each of the K*D coordinates over the samples,
            ``(x - mean) / sqrt(var + std_eps)``. The statistics are NOT detached: gradients flow
            through them (it is a BatchNorm without affine), which makes the loss invariant to a
            per-coordinate rescaling of the codebooks so the model cannot lower it by inflating
            the scale; ``var + eps`` keeps the gradient finite for constant coordinates.
        max_samples: keep a random subset of at most this many samples (drawn with ``generator``),
            per rank, before gathering.
        num_features: rff only; total number of random frequencies, split evenly over the kernel's
            components (``num_features // len(bandwidths)`` each).
        generator: torch.Generator for the permutations / subsampling / frequencies.
        gather: when torch.distributed is initialized with world_size > 1, all_gather the samples of
            all ranks (gradient flows to the local part only); no-op otherwise.
        clamp: clamp the result at 0 (the paper does). ``False`` returns the raw statistic, which
            can be slightly negative (tests and diagnostics).
        normalization: one of ``NORMALIZATIONS``: ``'samples'`` divides the kernel sums by the
            N = B x T' samples; ``'clips'`` by the B clips of ``streams``, as the authors' code
            (permutation estimator, distance kernels; about (N/B)^2 x 'samples' plus a floor of
            2 (N - B) / (B (B - 1)) per kernel component, so the clamp never acts).
        std_eps: added to the variance in the standardization (1e-5; the authors' code: 1e-8).
        std_correction: 0: biased per-coordinate variance; 1: unbiased (``torch.var``'s default,
            the authors' code).
    Returns:
        A scalar tensor, differentiable w.r.t. ``streams``: ~0 when the codebooks are independent.
    Raises:
        ValueError: bad shapes, dtypes, delays, kernel/estimator names or combinations.
    """
    _validate(streams, estimator=estimator, kernel=kernel, bandwidth=bandwidth, scale=scale, max_samples=max_samples,
              num_features=num_features, normalization=normalization, gather=gather, std_eps=std_eps,
              std_correction=std_correction)
    # Squared distances of ~1e3 need float32 matmuls: never let an outer autocast run them in half.
    with torch.autocast(device_type=streams.device.type, enabled=False):
        return _independence_loss(streams, estimator, kernel, bandwidths, bandwidth, scale, delays,
                                  standardize, max_samples, num_features, generator, gather, clamp,
                                  normalization, crop, float(std_eps), int(std_correction))


def _independence_loss(streams: torch.Tensor, estimator: str, kernel: str,
                       bandwidths: tp.Optional[tp.Sequence[float]], bandwidth: str, scale: float,
                       delays: tp.Optional[tp.Sequence[int]], standardize: bool, max_samples: tp.Optional[int],
                       num_features: int, generator: tp.Optional[torch.Generator], gather: bool,
                       clamp: bool, normalization: str, crop: tp.Optional[int], std_eps: float,
                       std_correction: int) -> torch.Tensor:
    batch, num_codebooks, dim, num_frames = streams.shape
    delays_list = _check_delays(delays, num_codebooks, num_frames)
    x = streams
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if delays_list is not None and any(d != 0 for d in delays_list):
        x = align_delays(x, delays_list, crop)
    elif crop is not None:
        raise ValueError(f"crop={crop} applies to delayed tuples: give non-zero delays, or crop=None")
    x = x.permute(0, 3, 1, 2).reshape(-1, num_codebooks, dim)   # [N, K, D]; nothing below writes in place
    if max_samples is not None and x.shape[0] > int(max_samples):
        idx = _randperm(x.shape[0], x.device, generator)[:int(max_samples)]
        x = x[idx]
    if gather:
        x = _gather_samples(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples (B * (T - max(delays))), got {n}")
    if standardize:
        flat = x.reshape(n, -1)
        mean = flat.mean(0, keepdim=True)
        var = (flat - mean).square().mean(0, keepdim=True)
        if std_correction:
            var = var * (n / (n - 1))
        x = ((flat - mean) / torch.sqrt(var + std_eps)).reshape(n, num_codebooks, dim)
    params = _resolve_params(kernel, bandwidths, bandwidth, x)
    if estimator == 'permutation':
        value = _permutation_mmd(x, kernel, params, generator, batch if normalization == 'clips' else None)
    elif estimator == 'dhsic':
        value = _dhsic(x, kernel, params)
    else:
        value = _rff(x, kernel, params, int(num_features), generator)
    if clamp:
        value = value.clamp_min(0.0)
    return value * float(scale)
