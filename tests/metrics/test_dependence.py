"""Tests of audiocraft_mmd.metrics.dependence (discrete codebook statistics, CPU, small sizes).

Noise levels used for the tolerances: with N samples of a C x C table, the plug-in MI of
independent variables is ~ chi2((C-1)^2) / (2 N ln 2) bits, i.e. bias (C-1)^2 / (2 N ln 2) and std
sqrt(2) (C-1) / (2 N ln 2); Miller-Madow removes the bias to first order.
"""
import math

import pytest
import torch

from audiocraft_mmd.metrics import CodebookDependence, codebook_dependence


pytestmark = pytest.mark.usefixtures('one_thread')


def copy_channel(n: int, card: int, p: float, seed: int, k: int = 2) -> torch.Tensor:
    """codes [1, k, n]: c_1 uniform; c_j = c_1 with probability p, else uniform (independently)."""
    g = torch.Generator().manual_seed(seed)
    c1 = torch.randint(0, card, (n,), generator=g)
    cols = [c1]
    for _ in range(k - 1):
        keep = torch.rand(n, generator=g) < p
        cols.append(torch.where(keep, c1, torch.randint(0, card, (n,), generator=g)))
    return torch.stack(cols)[None]


def closed_form_mi(card: int, p: float) -> float:
    # P(a, b) = (p [a = b] + (1 - p) / C) / C, uniform marginals.
    same = p + (1 - p) / card
    out = same * math.log2(card * p + 1 - p)
    if p < 1:
        out += (card - 1) * (1 - p) / card * math.log2(1 - p)
    return out


def closed_form_tc3(card: int, p: float) -> float:
    # c2, c3 independent noisy copies of c1: TC = 3 log2 C - H(c1, c2, c3), by enumeration.
    trans = torch.full((card, card), (1 - p) / card) + p * torch.eye(card)     # P(c_j = b | c_1 = a)
    joint = trans[:, :, None] * trans[:, None, :] / card                       # [a, b, c]
    h = -(joint * torch.log2(joint)).sum().item()
    return 3 * math.log2(card) - h


@pytest.mark.parametrize('p', [0.0, 0.3, 0.7])
def test_pairwise_mi_matches_closed_form(p):
    card, n = 16, 20000
    r = codebook_dependence(copy_channel(n, card, p, seed=1), card)
    truth = closed_form_mi(card, p)
    # Miller-Madow MI: residual bias O(1/N^2); sampling std <= ~0.01 bits here (0.0008 at p=0,
    # see module docstring; ~sqrt(Var[log ratio] / N) <= 0.01 for p <= 0.7). Tolerance 0.03 bits.
    assert r['mi'][0][1] == pytest.approx(truth, abs=0.03)
    assert r['mi'][0][1] == r['mi'][1][0]
    assert r['tc'] == pytest.approx(r['mi'][0][1], abs=1e-9)          # K = 2: TC = MI
    # Plug-in is biased upward by ~ (C-1)^2 / (2 N ln 2) = 0.0081 bits at independence.
    assert r['mi_plugin'][0][1] > r['mi'][0][1]
    # Shuffled baseline: ~0 after correction (std 0.0008 -> 0.004 is 5 std), while its plug-in
    # value sits at the bias level 0.0081 +- 0.0008.
    assert abs(r['mi_shuffled'][0][1]) < 0.004
    assert r['mi_shuffled_plugin'][0][1] == pytest.approx(0.0081, abs=0.004)
    assert not r['tc_undersampled'] and not r['mi_undersampled'][0][1]


def test_total_correlation_three_codebooks():
    card, n, p = 8, 30000, 0.5
    r = codebook_dependence(copy_channel(n, card, p, seed=2, k=3), card)
    # 512 cells, ~59 samples per cell; Miller-Madow residual bias is O(1/N^2) and the sampling
    # std of TC is ~0.01 bits: tolerance 0.04 bits.
    assert r['tc'] == pytest.approx(closed_form_tc3(card, p), abs=0.04)
    assert abs(r['tc_shuffled']) < 0.02          # ~0 after correction (std ~0.003)
    assert r['tc_norm'] == pytest.approx(r['tc'] / sum(r['entropy']), rel=1e-12)
    assert r['tc_excess'] == pytest.approx(r['tc'] - r['tc_shuffled'])
    assert r['mi'][1][2] > 0.05                  # c2 and c3 are dependent through c1


def test_marginal_statistics():
    # Codebook 1 uses 4 of 8 symbols uniformly: entropy 2 bits, perplexity 4, utilization 0.5.
    n = 4000
    c1 = torch.arange(n) % 4
    c2 = torch.arange(n) % 8
    r = codebook_dependence(torch.stack([c1, c2])[None], 8)
    assert r['entropy_plugin'] == pytest.approx([2.0, 3.0])
    assert r['perplexity'] == pytest.approx([4.0, 8.0])
    assert r['utilization'] == pytest.approx([0.5, 1.0])
    # Miller-Madow adds (m - 1) / (2 N ln 2).
    assert r['entropy'][0] == pytest.approx(2.0 + 3 / (2 * n * math.log(2)))


def test_undersampled_joint_is_flagged():
    # 4 codebooks of 2048 symbols, 5000 frames: almost every joint tuple is unique.
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (5, 4, 1000), generator=g)
    r = codebook_dependence(codes, 2048)
    assert r['tc_undersampled'] is True
    assert any('undersampled' in note for note in r['notes'])
    assert r['joint_cells_possible'] == 2048 ** 4
    # The bias is visible in the shuffled baseline: it is as large as the "signal".
    assert r['tc_shuffled'] > 10 and abs(r['tc_excess']) < 0.5
    m = CodebookDependence(2048, 4)
    m.update(codes)
    flat = m.to_metrics(prefix='val/')
    assert flat['val/tc_undersampled'] == 1.0 and flat['val/mi_undersampled'] == 1.0


def test_incremental_updates_equal_one_shot_and_keys():
    codes = copy_channel(6000, 16, 0.5, seed=3, k=3).reshape(3, 3, 2000).permute(1, 0, 2)  # [3, K=3, 2000]
    one = codebook_dependence(codes, 16)
    m = CodebookDependence(16, 3)
    for b in range(3):
        for t0 in range(0, 2000, 700):
            m.update(codes[b:b + 1, :, t0:t0 + 700])
    inc = m.compute()
    # Different chunking of the same frames gives identical counts, hence identical results.
    for key in ('entropy', 'mi', 'tc', 'tc_plugin', 'tc_shuffled', 'num_samples'):
        assert inc[key] == one[key]
    flat = m.to_metrics()
    expected = {f'{s}_q{k}' for s in ('entropy', 'entropy_plugin', 'ppl', 'util') for k in (1, 2, 3)}
    expected |= {f'mi_{i}{j}' for i, j in ((1, 2), (1, 3), (2, 3))}
    expected |= {f'mi_shuffled_{i}{j}' for i, j in ((1, 2), (1, 3), (2, 3))}
    expected |= {'mi_mean', 'mi_mean_plugin', 'mi_mean_shuffled', 'mi_mean_excess', 'mi_undersampled', 'tc',
                 'tc_plugin', 'tc_shuffled', 'tc_excess', 'tc_norm', 'tc_undersampled', 'samples_per_joint_cell',
                 'num_samples'}
    assert set(flat) == expected
    assert all(isinstance(v, float) for v in flat.values())
    assert flat['mi_12'] == pytest.approx(inc['mi'][0][1])


def test_delays_align_codes():
    # The delay pattern samples (q_1[t], q_2[t - d_2]) jointly; with q_2[t] = q_1[t + 2] that pair
    # is identical for d_2 = 2, while time-aligned pairs (q_1[t], q_1[t + 2]) are independent.
    g = torch.Generator().manual_seed(4)
    base = torch.randint(0, 8, (2, 1002), generator=g)
    codes = torch.stack([base[:, :1000], base[:, 2:]], dim=1)            # [B=2, K=2, T=1000]
    aligned = codebook_dependence(codes, 8, delays=[0, 2])
    plain = codebook_dependence(codes, 8)
    assert aligned['num_samples'] == 2 * 998
    assert aligned['mi'][0][1] == pytest.approx(3.0, abs=0.05)           # identical: MI = H = 3 bits
    assert abs(plain['mi'][0][1]) < 0.05                                 # independent frames


def test_large_cardinality_rows_keys():
    # C^K >= 2^62 switches the K-way keys to rows; results must match the int64-key path's logic.
    g = torch.Generator().manual_seed(5)
    c = torch.randint(0, 4, (1, 1, 3000), generator=g)
    codes = torch.cat([c, c, torch.randint(0, 4, (1, 1, 3000), generator=g)], dim=1)
    small = codebook_dependence(codes, 4)
    big = codebook_dependence(codes, 2 ** 21)          # (2^21)^3 = 2^63: row keys
    assert big['tc_plugin'] == pytest.approx(small['tc_plugin'], abs=1e-12)
    assert big['mi'][0][1] > 1.9


@pytest.mark.parametrize('codes,match', [
    (torch.zeros(2, 3, 10), 'integer'),
    (torch.zeros(2, 10, dtype=torch.long), 'shape'),
    (torch.zeros(2, 2, 10, dtype=torch.long), 'K=3'),
    (torch.full((1, 3, 10), 16, dtype=torch.long), r'\[0, 16\)'),
    (torch.full((1, 3, 10), -1, dtype=torch.long), r'\[0, 16\)'),
])
def test_bad_input(codes, match):
    m = CodebookDependence(16, 3)
    with pytest.raises(ValueError, match=match):
        m.update(codes)


def test_bad_construction_and_empty():
    with pytest.raises(ValueError):
        CodebookDependence(16, 3, delays=[0, 1])
    with pytest.raises(ValueError):
        CodebookDependence(16, 3, delays=[0, -1, 1])
    with pytest.raises(ValueError):
        CodebookDependence(0, 3)
    m = CodebookDependence(16, 3, delays=[0, 1, 5])
    with pytest.raises(ValueError, match='before any update'):
        m.compute()
    with pytest.raises(ValueError, match='must be < T'):
        m.update(torch.zeros(1, 3, 5, dtype=torch.long))


def test_reduce_is_noop_without_distributed():
    m = CodebookDependence(16, 2)
    m.update(copy_channel(1000, 16, 0.5, seed=0))
    before = m.compute()
    m.reduce()
    assert m.compute()['mi'] == before['mi']


# ------------------------------------------------------------------- torch.distributed
def _reduce_worker(rank, world):
    codes = copy_channel(4000, 16, 0.5, seed=0, k=3).reshape(3, 2, 2000).permute(1, 0, 2)
    m = CodebookDependence(16, 3)
    m.update(codes[rank:rank + 1, :, : 1500 + 500 * rank])   # unequal sizes across ranks
    m.reduce()
    m.reduce()                                                # idempotent
    return m.compute()


def test_reduce_two_ranks_sums_counts(gloo_workers):
    results = gloo_workers(_reduce_worker, 2)
    codes = copy_channel(4000, 16, 0.5, seed=0, k=3).reshape(3, 2, 2000).permute(1, 0, 2)
    ref = CodebookDependence(16, 3)
    ref.update(codes[0:1, :, :1500])
    ref.update(codes[1:2, :, :2000])
    expect = ref.compute()
    for rank in range(2):
        got = results[rank]
        assert got['num_samples'] == 3500
        for key in ('entropy', 'mi', 'tc', 'tc_shuffled', 'utilization'):
            assert torch.allclose(torch.tensor(got[key]), torch.tensor(expect[key]), atol=1e-12), key
