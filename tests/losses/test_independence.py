"""Tests of audiocraft_mmd.losses.independence (torch only, CPU, small sizes).

Statistical tolerances are stated next to each assertion. The reference noise levels quoted in
the comments were measured on the same generators with 20 data seeds at N = 512 samples, K = 4,
D = 4 (see docs/estimators.md): under independence 'dhsic' and 'rff' have std ~1.3e-4 (mean 0),
the paper's 'permutation' estimator has mean ~-5e-3 (its -O(1/N) bias) and std ~3e-4; the shared
latent with rho = 0.2 / 0.5 gives ~3.5e-3 / ~2.2e-2.
"""

import pytest
import torch

from audiocraft_mmd.losses import ESTIMATORS, KERNELS, align_delays, independence_loss, kernel_options
from audiocraft_mmd.losses import independence as ind


pytestmark = pytest.mark.usefixtures('one_thread')


def make_streams(rho: float, seed: int, batch: int = 4, num_codebooks: int = 4, dim: int = 4,
                 frames: int = 128, dtype=torch.float32) -> torch.Tensor:
    """[B, K, D, T] with a latent shared by all codebooks: x_k = sqrt(rho) z + sqrt(1-rho) e_k."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 1, dim, frames, generator=g, dtype=dtype)
    e = torch.randn(batch, num_codebooks, dim, frames, generator=g, dtype=dtype)
    return rho ** 0.5 * z + (1 - rho) ** 0.5 * e


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


VALID = [(e, k) for e in ESTIMATORS for k in KERNELS
         if not (e == 'dhsic' and k == 'inverse_quadratic')
         and not (e == 'rff' and k in ('linear', 'quadratic'))]


# ------------------------------------------------------------------------------------ helpers
def test_align_delays_indexing():
    x = torch.arange(2 * 3 * 2 * 6, dtype=torch.float32).reshape(2, 3, 2, 6)
    delays = [0, 2, 1]
    out = align_delays(x, delays)
    assert out.shape == (2, 3, 2, 4)
    for k, d in enumerate(delays):
        for j in range(4):  # aligned index j <-> time t = j + max(d); codebook k at frame t - d_k
            assert torch.equal(out[:, k, :, j], x[:, k, :, j + 2 - d])
    codes = torch.arange(3 * 6).reshape(1, 3, 6)
    assert align_delays(codes, delays).shape == (1, 3, 4)
    assert torch.equal(align_delays(x, [0, 0, 0]), x)


# ----------------------------------------------------------------- independence vs dependence
@pytest.mark.parametrize('estimator', ESTIMATORS)
def test_independent_near_zero_and_grows_with_dependence(estimator):
    def value(rho, seed):
        return independence_loss(make_streams(rho, seed), estimator=estimator, generator=gen(seed),
                                 clamp=False).item()

    null = [value(0.0, s) for s in range(3)]
    if estimator == 'permutation':
        # The paper's estimator (U, U, V) is biased by -O(1/N) under independence (measured mean
        # -5e-3, std 3e-4 at N=512): require it to be <= 1e-3 (> 15 std above the mean) and not
        # absurdly negative, and the paper's clamped output to be exactly 0.
        assert all(-2e-2 < v < 1e-3 for v in null), null
        assert independence_loss(make_streams(0.0, 0), generator=gen(0)).item() == 0.0
    else:
        # Mean-zero under independence, std ~1.3e-4 at N=512: |v| < 1e-3 is > 7 std.
        assert all(abs(v) < 1e-3 for v in null), null
    # Mean over 2 seeds per strength; the gaps between strengths (~1e-2 to 5e-2) are > 10x the
    # std (<= 1.5e-3 at rho=0.5), so the ordering is not a coin flip.
    strengths = [0.0, 0.3, 0.6, 0.9]
    means = [sum(value(r, s) for s in range(2)) / 2 for r in strengths]
    assert all(b > a + 5e-3 for a, b in zip(means, means[1:])), means
    assert means[-1] > 0.05, means


@pytest.mark.parametrize('kernel', ['gaussian', 'inverse_quadratic', 'quadratic'])
def test_other_kernels_detect_dependence(kernel):
    estimator = 'rff' if kernel == 'inverse_quadratic' else 'dhsic'
    null = independence_loss(make_streams(0.0, 1), estimator=estimator, kernel=kernel, bandwidth='fixed',
                             generator=gen(1), clamp=False)
    dep = independence_loss(make_streams(0.6, 1), estimator=estimator, kernel=kernel, bandwidth='fixed',
                            generator=gen(1), clamp=False)
    # 20x margin: the signal at rho=0.6 is tens of null stds for these kernels.
    assert dep.item() > 20 * abs(null.item()) + 1e-6, (null, dep)


def test_linear_kernel_is_dependence_blind():
    # The joint and the product of marginals have the same mean, so the linear-kernel MMD has
    # population value 0; the paper's estimator is deterministic and <= 0 (-2 tr(Cov) / (N - 1)),
    # so its clamped value is exactly 0 whatever the dependence.
    x = make_streams(0.9, 0)
    raw = independence_loss(x, kernel='linear', clamp=False, generator=gen(0))
    n = 4 * 128
    assert raw.item() == pytest.approx(-2.0 * 16 / (n - 1), rel=1e-3)  # tr(Cov) = K*D after standardizing
    assert independence_loss(x, kernel='linear', generator=gen(0)).item() == 0.0
    assert independence_loss(x, kernel='linear', estimator='dhsic', clamp=False).item() == 0.0


# -------------------------------------------------------------- estimators vs brute force
def _brute_reference(x: torch.Tensor, kfun):
    """K=2 brute force over all index tuples: (expectation of the permutation estimator,
    dHSIC without self pairs). x [n, 2, D] float64."""
    n = x.shape[0]
    z = x.reshape(n, -1)
    eye = torch.eye(n, dtype=torch.bool)
    u_joint = kfun(z[:, None], z[None, :])[~eye].mean()
    # product-of-marginals samples y_(a,c) = (x_a1, x_c2)
    y = torch.cat([x[:, None, 0].expand(n, n, -1), x[None, :, 1].expand(n, n, -1)], -1).reshape(n * n, -1)
    a = torch.arange(n).repeat_interleave(n)
    c = torch.arange(n).repeat(n)
    kyy = kfun(y[:, None], y[None, :])
    mask = (a[:, None] != a[None, :]) & (c[:, None] != c[None, :])
    prod_term = kyy[mask].mean()
    kzy = kfun(z[:, None], y[None, :])                                # [n, n*n]
    cross_v = kzy.mean()
    self_pair = (a[None, :] == torch.arange(n)[:, None]) | (c[None, :] == torch.arange(n)[:, None])
    cross_u = kzy[~self_pair].mean()
    return u_joint + prod_term - 2 * cross_v, u_joint + prod_term - 2 * cross_u


def _kfun(kernel, params):
    def sqd(u, v):
        return (u - v).square().sum(-1)
    if kernel in ('multiscale_gaussian', 'gaussian'):
        return lambda u, v: sum(torch.exp(-sqd(u, v) / (2 * a)) for a in params)
    if kernel == 'inverse_quadratic':
        return lambda u, v: sum(a ** 2 / (a ** 2 + sqd(u, v)) for a in params)
    if kernel == 'linear':
        return lambda u, v: (u * v).sum(-1)
    return lambda u, v: (u * v).sum(-1).square()


def _small_dependent(n=20, dim=2, seed=0):
    g = gen(seed)
    z = torch.randn(n, 1, dim, generator=g, dtype=torch.float64)
    x = 0.8 * z + 0.6 * torch.randn(n, 2, dim, generator=g, dtype=torch.float64)
    return x


BRUTE_PARAMS = {'multiscale_gaussian': (0.5, 2.0, 8.0), 'gaussian': (3.0,), 'inverse_quadratic': (2.0,),
                'linear': (), 'quadratic': ()}


@pytest.mark.parametrize('kernel', ['multiscale_gaussian', 'gaussian', 'linear', 'quadratic'])
def test_dhsic_closed_form_matches_brute_force(kernel):
    x = _small_dependent()
    params = BRUTE_PARAMS[kernel]
    perm_expect, unbiased = _brute_reference(x, _kfun(kernel, params))
    # float64 closed forms vs explicit sums over all index tuples: only rounding differs.
    closed = ind._dhsic(x, kernel, params, cross_self_pairs=True).item()
    assert closed == pytest.approx(perm_expect.item(), rel=1e-9, abs=1e-12)
    assert ind._dhsic(x, kernel, params).item() == pytest.approx(unbiased.item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize('kernel', list(KERNELS))
def test_permutation_mean_matches_its_closed_form_expectation(kernel):
    x = _small_dependent()
    params = BRUTE_PARAMS[kernel]
    perm_expect, _ = _brute_reference(x, _kfun(kernel, params))
    g = gen(123)
    vals = torch.stack([ind._permutation_mmd(x, kernel, params, g) for _ in range(300)])
    se = vals.std() / 300 ** 0.5
    # Mean of 300 i.i.d. permutations: |mean - E| < 4.5 standard errors (+ rounding) fails with
    # probability < 1e-5 by the CLT. (Linear: deterministic, se = 0.)
    assert abs(vals.mean() - perm_expect).item() <= 4.5 * se.item() + 1e-10, (vals.mean(), perm_expect, se)
    if kernel != 'linear':
        assert se > 0


@pytest.mark.parametrize('kernel', ['multiscale_gaussian', 'inverse_quadratic'])
def test_rff_is_unbiased_for_the_dhsic_statistic(kernel):
    # Tiny K=2 problem where the target is computable by brute force even for the inverse
    # quadratic kernel (which has no closed form).
    x = _small_dependent()
    params = BRUTE_PARAMS[kernel]
    _, target = _brute_reference(x, _kfun(kernel, params))
    draws = torch.stack([ind._rff(x, kernel, params, 4096, gen(s)) for s in range(30)])
    se = draws.std() / 30 ** 0.5
    # 30 independent frequency draws: |mean - target| < 4.5 standard errors (CLT, p < 1e-5).
    assert abs(draws.mean() - target).item() < 4.5 * se.item(), (draws.mean(), target, se)


@pytest.mark.parametrize('bandwidth', ['fixed', 'median'])
def test_rff_agrees_with_dhsic_for_enough_features(bandwidth):
    x = make_streams(0.5, 3)
    exact = independence_loss(x, estimator='dhsic', bandwidth=bandwidth, clamp=False).item()
    approx = [independence_loss(x, estimator='rff', bandwidth=bandwidth, num_features=4096,
                                generator=gen(s), clamp=False).item() for s in range(3)]
    mean = sum(approx) / len(approx)
    # Measured per-draw relative std at num_features=4096 is ~2% (see docs/estimators.md): the mean of 3 draws
    # within 6% is > 5 std.
    assert abs(mean - exact) < 0.06 * exact, (exact, approx)


def test_permutation_bias_is_the_self_pair_term():
    # E_perm[paper] = dhsic(unbiased) - 2 * (cross_V - cross_U): on real-size data the paper's
    # estimator is shifted down by O(1/N) (here ~ -5e-3 at N=512); the closed form predicts it.
    x = make_streams(0.3, 5)
    flat = x.permute(0, 3, 1, 2).reshape(-1, 4, 4)
    flat = (flat - flat.mean(0)) / (flat.var(0, unbiased=False) + 1e-5).sqrt()
    params = KERNELS['multiscale_gaussian']
    expect = ind._dhsic(flat, 'multiscale_gaussian', params, cross_self_pairs=True).item()
    unbiased = ind._dhsic(flat, 'multiscale_gaussian', params).item()
    vals = torch.tensor([independence_loss(x, generator=gen(s), clamp=False).item() for s in range(20)])
    # 20 permutations, 4.5 standard errors (CLT).
    assert abs(vals.mean().item() - expect) < 4.5 * vals.std().item() / 20 ** 0.5 + 1e-7
    assert unbiased - expect > 2e-3  # the bias is material at this N


# --------------------------------------------------------------------------- bandwidth
def test_fixed_bandwidths_nearly_blind_at_d128_median_is_not():
    # D = 128, K = 4: standardized 512-dim samples have squared distances ~1024, so with the
    # paper's variances (<= 50) every off-diagonal kernel entry is < exp(-1024/100) ~ 4e-5.
    dep = make_streams(0.9, 0, batch=4, dim=128)
    null = make_streams(0.0, 0, batch=4, dim=128)
    fixed = independence_loss(dep, estimator='dhsic', bandwidth='fixed', clamp=False).item()
    median = independence_loss(dep, estimator='dhsic', bandwidth='median', clamp=False).item()
    median_null = independence_loss(null, estimator='dhsic', bandwidth='median', clamp=False).item()
    # Measured: fixed ~1.3e-5, median ~2.6e-3 (std over data seeds < 1e-5), median null ~1e-6.
    assert fixed < 1e-4
    assert median > 1e-3 and median > 50 * fixed
    assert abs(median_null) < 0.05 * median
    # The gradient is as blind as the value.
    d1 = dep.clone().requires_grad_(True)
    independence_loss(d1, estimator='dhsic', bandwidth='fixed', clamp=False).backward()
    d2 = dep.clone().requires_grad_(True)
    independence_loss(d2, estimator='dhsic', bandwidth='median', clamp=False).backward()
    assert d2.grad.norm() > 10 * d1.grad.norm()


def test_median_bandwidth_is_scale_free_without_standardization():
    x = make_streams(0.5, 2)
    a = independence_loss(x, estimator='dhsic', bandwidth='median', standardize=False)
    b = independence_loss(100.0 * x, estimator='dhsic', bandwidth='median', standardize=False)
    assert b.item() == pytest.approx(a.item(), rel=1e-3)


# ------------------------------------------------------------------------------- delays
@pytest.mark.parametrize('estimator', ['permutation', 'dhsic', 'rff'])
def test_delays_find_lagged_dependence(estimator):
    # Codebook 4 carries the latent 3 frames earlier: x_4[t - 3] shares z[t] with x_1[t], which is
    # the tuple the delay pattern [0, 1, 2, 3] samples jointly. Time-aligned tuples (no delays)
    # pair x_1[t] with z[t + 3], independent of z[t].
    g = gen(7)
    batch, dim, frames = 4, 4, 131
    z = torch.randn(batch, dim, frames + 3, generator=g)
    x = torch.randn(batch, 4, dim, frames, generator=g)
    x[:, 0] = 0.8 * z[..., :frames] + 0.6 * x[:, 0]
    x[:, 3] = 0.8 * z[..., 3:] + 0.6 * x[:, 3]
    kw = dict(estimator=estimator, bandwidth='median', clamp=False)
    with_delays = independence_loss(x, delays=[0, 1, 2, 3], generator=gen(0), **kw).item()
    without = independence_loss(x, generator=gen(0), **kw).item()
    wrong = independence_loss(x, delays=[0, 0, 0, 1], generator=gen(0), **kw).item()
    # Measured: lag-matched ~6.5e-3 (dhsic/rff), ~6e-3 above the null for the permutation
    # estimator (whose null mean is ~-5e-3, its -O(1/N) bias); null std <= 3e-4. A 4e-3 gap is
    # > 10 null std and the null bound 1e-3 is > 7 std.
    assert with_delays > without + 4e-3 and with_delays > wrong + 4e-3, (with_delays, without, wrong)
    if estimator != 'permutation':
        assert with_delays > 3e-3, with_delays
        assert abs(without) < 1e-3 and abs(wrong) < 1e-3, (without, wrong)


# ------------------------------------------------------------------- gradients / purity
@pytest.mark.parametrize('estimator,kernel', VALID)
def test_gradients_finite_and_input_untouched(estimator, kernel):
    x = make_streams(0.5, 0, batch=2, frames=64).requires_grad_(True)
    before = x.detach().clone()
    version = x._version
    loss = independence_loss(x, estimator=estimator, kernel=kernel, generator=gen(0), num_features=256,
                             delays=[0, 1, 2, 3], clamp=False)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    if kernel != 'linear':
        assert x.grad.abs().sum() > 0
    assert torch.equal(x.detach(), before) and x._version == version


def test_gradient_finite_for_constant_coordinates_and_half_inputs():
    x = make_streams(0.5, 0, batch=2, frames=32)
    x[:, 1, 0] = 3.0  # a dead coordinate: var = 0
    x.requires_grad_(True)
    independence_loss(x, estimator='dhsic', bandwidth='median').backward()
    assert torch.isfinite(x.grad).all()
    h = make_streams(0.5, 0, batch=2, frames=32).to(torch.bfloat16).requires_grad_(True)
    out = independence_loss(h, estimator='dhsic')
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(h.grad.float()).all()


def test_outer_autocast_does_not_lower_precision():
    # Squared distances ~1e2..1e3 in bfloat16 would be off by whole units; the loss disables
    # autocast internally, so the value is the float32 one (same generator -> same permutation).
    x = make_streams(0.5, 0, batch=2, frames=64)
    ref = independence_loss(x, generator=gen(0), clamp=False)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = independence_loss(x, generator=gen(0), clamp=False)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize('kind,params', [('gauss', (0.7, 3.0)), ('iq', (2.0,))])
@pytest.mark.parametrize('zero_diag', [False, True])
def test_kernel_row_sums_gradcheck(kind, params, zero_diag):
    g = gen(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = x if zero_diag else torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ind._kernel_row_sums(a, b, kind, params, zero_diag),
                                    (x, y))
    if zero_diag:
        assert torch.autograd.gradcheck(lambda a: ind._kernel_row_sums(a, a, kind, params, True), (x,))


@pytest.mark.parametrize('num_codebooks', [2, 3])
def test_rff_analytic_backward_gradcheck(num_codebooks):
    g = gen(1)
    x = torch.randn(6, num_codebooks, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, num_codebooks, 2, generator=g, dtype=torch.float64)
    coef = torch.rand(5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ind._RFFStat.apply(a, w, coef), (x,))


def test_chunking_does_not_change_results(monkeypatch):
    x = make_streams(0.5, 1, batch=2, frames=64, dtype=torch.float64)

    def run(estimator):
        xx = x.clone().requires_grad_(True)
        out = independence_loss(xx, estimator=estimator, bandwidth='median', num_features=128,
                                generator=gen(3), clamp=False)
        out.backward()
        return out.detach(), xx.grad

    ref = {e: run(e) for e in ESTIMATORS}
    monkeypatch.setattr(ind, '_CHUNK_ELEMENTS', 1000)  # forces many small chunks
    monkeypatch.setattr(ind, '_CHUNK_ELEMENTS_CPU', 1000)
    for e in ESTIMATORS:
        out, grad = run(e)
        assert torch.allclose(out, ref[e][0], rtol=1e-9, atol=1e-12)
        assert torch.allclose(grad, ref[e][1], rtol=1e-7, atol=1e-12)


# ----------------------------------------------------------------------------- options
def test_scale_clamp_and_max_samples():
    x = make_streams(0.5, 0)
    a = independence_loss(x, estimator='dhsic')
    assert independence_loss(x, estimator='dhsic', scale=3.0).item() == pytest.approx(3 * a.item(), rel=1e-6)
    assert independence_loss(make_streams(0.0, 0), generator=gen(0)).item() >= 0.0
    # max_samples: the subsample drawn with the generator, then the same statistic.
    n = 4 * 128
    idx = torch.randperm(n, generator=gen(9))[:200]
    flat = x.permute(0, 3, 1, 2).reshape(n, 4, 4)[idx]
    sub = flat.permute(1, 2, 0)[None]                      # [1, K, D, 200]
    expect = independence_loss(sub, estimator='dhsic', clamp=False)
    got = independence_loss(x, estimator='dhsic', max_samples=200, generator=gen(9), clamp=False)
    assert got.item() == pytest.approx(expect.item(), rel=1e-5, abs=1e-8)


def test_gather_is_noop_without_distributed():
    x = make_streams(0.5, 0)
    assert independence_loss(x, estimator='dhsic', gather=True).item() == \
        independence_loss(x, estimator='dhsic').item()


@pytest.mark.parametrize('kwargs,match', [
    (dict(streams=torch.randn(2, 4, 8)), 'shape'),
    (dict(streams=torch.randn(2, 1, 4, 8)), 'K >= 2'),
    (dict(streams=torch.randint(0, 4, (2, 4, 4, 8))), 'floating'),
    (dict(streams=[[1.0]]), 'torch.Tensor'),
    (dict(delays=[0, 1]), 'expected 4 delays'),
    (dict(delays=[0, -1, 2, 3]), 'non-negative'),
    (dict(delays=[0, 1, 2, 8]), 'must be <'),
    (dict(kernel='laplace'), 'unknown kernel'),
    (dict(estimator='mine'), 'unknown estimator'),
    (dict(bandwidth='silverman'), 'unknown bandwidth'),
    (dict(estimator='dhsic', kernel='inverse_quadratic'), "use estimator='permutation'"),
    (dict(estimator='rff', kernel='linear'), "use estimator='dhsic'"),
    (dict(kernel='quadratic', bandwidth='median'), 'no bandwidth'),
    (dict(kernel='linear', bandwidths=[1.0]), 'takes no bandwidths'),
    (dict(kernel='gaussian', bandwidths=[1.0, 2.0]), 'exactly one'),
    (dict(bandwidths=[1.0, -2.0]), 'positive'),
    (dict(max_samples=1), 'max_samples'),
    (dict(num_features=0), 'num_features'),
    (dict(streams=torch.randn(1, 4, 4, 4), delays=[0, 1, 2, 3]), 'at least 2 samples'),
])
def test_bad_input_raises_value_error(kwargs, match):
    kwargs = dict(kwargs)
    streams = kwargs.pop('streams', torch.randn(2, 4, 4, 8))
    with pytest.raises(ValueError, match=match):
        independence_loss(streams, **kwargs)


def test_align_delays_bad_input():
    with pytest.raises(ValueError):
        align_delays(torch.randn(2, 3, 4), [0, 1])
    with pytest.raises(ValueError):
        align_delays(torch.randn(4), [0])


# ------------------------------------------------------------------- torch.distributed
def _gather_worker(rank, world):
    full = make_streams(0.5, 0, batch=4, frames=32)          # same on every rank
    local = full[2 * rank: 2 * rank + 2].clone().requires_grad_(True)
    loss = independence_loss(local, estimator='dhsic', gather=True)
    loss.backward()
    return loss.item(), local.grad.tolist()


def test_gather_two_ranks_matches_single_process(gloo_workers):
    results = gloo_workers(_gather_worker, 2)
    full = make_streams(0.5, 0, batch=4, frames=32).requires_grad_(True)
    ref = independence_loss(full, estimator='dhsic')
    ref.backward()
    for rank in range(2):
        value, grad = results[rank]
        grad = torch.tensor(grad)
        assert value == pytest.approx(ref.item(), rel=1e-5)
        # Gradient reaches the local part only, and equals the full gradient there.
        assert torch.allclose(grad, full.grad[2 * rank: 2 * rank + 2], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize('estimator', ESTIMATORS)
@pytest.mark.parametrize('bandwidth', ['fixed', 'median'])
def test_kernel_options_give_a_runnable_combination_closest_to_the_preferred_one(estimator, bandwidth):
    streams = torch.randn(2, 3, 4, 20, generator=torch.Generator().manual_seed(0))
    for kernel in KERNELS:
        options = kernel_options(kernel, estimator, bandwidth)
        value = independence_loss(streams, clamp=False, generator=torch.Generator().manual_seed(0), **options)
        assert torch.isfinite(value)
        # The preferred choice is kept wherever the kernel supports it.
        if kernel in ('multiscale_gaussian', 'gaussian'):
            assert options == {'kernel': kernel, 'estimator': estimator, 'bandwidth': bandwidth}
    with pytest.raises(ValueError, match='unknown kernel'):
        kernel_options('laplacian', estimator, bandwidth)


# ------------------------------------------------------------------------------------ the authors' normalizer
def authors_mmd(streams: torch.Tensor, perms, bandwidths=(0.1, 1.0, 5.0, 10.0, 20.0, 50.0)):
    """The authors' term written from its description (PR #465 as shipped), independently of the module: codebook k
    shifted later by k frames (zero padded), the first K steps cropped, rows = (clip, step), per-coordinate
    standardization with the unbiased variance and eps 1e-8, codebook k's rows permuted by perms[k], kernel sums
    over all pairs divided by the CLIP count B: (S_xx - B) / (B (B - 1)) + (S_yy - B) / (B (B - 1)) - 2 S_xy / B^2
    per bandwidth a of exp(-d / 2a), clamped at 0.

    Returns:
        The term, and U_xx + U_yy: the mean off-diagonal kernel value within the joint and within the shuffled rows
        (summed over bandwidths).
    """
    batch, num_codebooks, dim, frames = streams.shape
    delayed = torch.stack([torch.nn.functional.pad(streams[:, k, :, :frames - k], (k, 0))
                           for k in range(num_codebooks)], dim=1)[..., num_codebooks:]
    rows = delayed.permute(0, 3, 1, 2).reshape(-1, num_codebooks, dim)
    rows = (rows - rows.mean(0, keepdim=True)) / torch.sqrt(rows.var(0, keepdim=True) + 1e-8)
    shuffled = torch.stack([rows[perms[k], k] for k in range(num_codebooks)], dim=1)
    n = len(rows)
    x, y = rows.reshape(n, -1), shuffled.reshape(n, -1)
    dxx, dyy, dxy = torch.cdist(x, x).square(), torch.cdist(y, y).square(), torch.cdist(x, y).square()
    out = torch.zeros((), dtype=streams.dtype)
    within = torch.zeros((), dtype=streams.dtype)
    for a in bandwidths:
        kxx, kyy = torch.exp(-dxx / (2 * a)), torch.exp(-dyy / (2 * a))
        out = out + (kxx.sum() - batch) / (batch * (batch - 1)) + (kyy.sum() - batch) / (batch * (batch - 1))
        out = out - 2 * torch.exp(-dxy / (2 * a)).sum() / batch ** 2
        within = within + (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return out.clamp(min=0), within


AUTHORS = dict(estimator='permutation', normalization='clips', delays=[0, 1, 2, 3], crop=4, std_eps=1e-8,
               std_correction=1)


@pytest.mark.parametrize('rho', [0.0, 0.5])
def test_clips_normalization_equals_the_authors_formula(rho):
    # float64, fixed permutations: the module and the formula above agree to 1e-6 (relative), with the delay crop
    # of K steps.
    batch, frames = 3, 20
    streams = make_streams(rho, seed=3, batch=batch, dim=3, frames=frames, dtype=torch.float64)
    ours = independence_loss(streams, generator=gen(5), **AUTHORS)
    n = batch * (frames - 4)
    g = gen(5)
    perms = [torch.randperm(n, generator=g) for _ in range(4)]  # drawn in the module's order: codebook 0 first
    theirs, within = authors_mmd(streams, perms)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    # What it is in this project's units, exactly: (n/B)^2 x the 'samples' value, plus the constant
    # 2 (n - B) / (B (B - 1)) per bandwidth (their diagonal), plus n (n - B) / (B^2 (B - 1)) x (U_xx + U_yy), a
    # within-sample kernel mean that is NOT constant: it has a gradient that spreads the samples apart.
    unclamped = independence_loss(streams, generator=gen(5), clamp=False, **AUTHORS)
    samples = independence_loss(streams, generator=gen(5), clamp=False, estimator='permutation',
                                delays=[0, 1, 2, 3], crop=4, std_eps=1e-8, std_correction=1)
    floor = 6 * 2 * (n - batch) / (batch * (batch - 1))
    spread = n * (n - batch) / (batch ** 2 * (batch - 1)) * within
    torch.testing.assert_close(unclamped, (n / batch) ** 2 * samples + floor + spread, rtol=1e-9, atol=1e-9)


def test_clips_grows_with_dependence_on_the_delayed_tuples():
    # Codebook k carries the shared latent k frames EARLY, so that the delayed tuples share it. Measured here with
    # seeds 1-3 at n = 496 rows, B = 4 clips: 15630-15660 independent, 16290-16320 at rho = 0.5 (the (n/B)^2 x
    # 'samples' part; the rest is the normalizer's spread term, ~15600): a margin of 300, 10 x the seed spread.
    def lagged(rho, seed):
        x = make_streams(rho, seed)
        return torch.stack([torch.roll(x[:, k], -k, dims=-1) for k in range(x.shape[1])], dim=1)
    for seed in (1, 2):
        independent = float(independence_loss(lagged(0.0, seed), generator=gen(0), **AUTHORS))
        dependent = float(independence_loss(lagged(0.5, seed), generator=gen(0), **AUTHORS))
        assert dependent > independent + 300


def test_crop_drops_the_leading_delayed_steps():
    x = torch.arange(2 * 3 * 1 * 10, dtype=torch.float32).reshape(2, 3, 1, 10)
    default, authors = align_delays(x, [0, 1, 2]), align_delays(x, [0, 1, 2], crop=3)
    assert default.shape[-1] == 8 and authors.shape[-1] == 7
    torch.testing.assert_close(authors, default[..., 1:])
    with pytest.raises(ValueError, match=r'crop=1 must be an int in \[max\(delays\), T\) = \[2, 10\)'):
        align_delays(x, [0, 1, 2], crop=1)
    with pytest.raises(ValueError, match='applies to delayed tuples'):
        independence_loss(torch.randn(2, 3, 2, 10), crop=3)


@pytest.mark.parametrize('kwargs,match', [
    (dict(normalization='frames'), "unknown normalization 'frames'"),
    (dict(normalization='clips', estimator='dhsic'), "needs estimator='permutation' and a distance kernel"),
    (dict(normalization='clips', kernel='linear'), "needs estimator='permutation' and a distance kernel"),
    (dict(normalization='clips', max_samples=10), 'cannot be combined with max_samples'),
    (dict(normalization='clips', gather=True), 'or gather'),
    (dict(std_eps=0.0), 'std_eps'),
    (dict(std_correction=2), 'std_correction'),
])
def test_bad_options_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ind.check_options(**kwargs)
    with pytest.raises(ValueError, match=match):
        independence_loss(torch.randn(2, 4, 4, 8), **kwargs)
