"""Every grid builds its XPs through the plugin main (what `dora grid NAME --dry_run` does), at both scales."""
import importlib
import pkgutil

import pytest

import grids
from audiocraft_mmd.xps import grid_xps


def set_scale(monkeypatch, small: bool) -> None:
    """Grids bind the small configs when AUDIOCRAFT_MMD_GRID_SCALE=small (`--small`), the paper's otherwise."""
    if small:
        monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'small')
    else:
        monkeypatch.delenv('AUDIOCRAFT_MMD_GRID_SCALE', raising=False)

GRID_NAMES = sorted(m.name for m in pkgutil.iter_modules(grids.__path__) if not m.name.startswith('_')
                    and m.name != 'local')
EXPECTED = {'mmd_sweep': 18, 'delay_ablation': 15, 'kernel_ablation': 15, 'estimator_ablation': 18,
            'schedule_ablation': 6, 'reproduction': 21, 'long_training': 9, 'factorization_gap': 18,
            'real_music': 6, 'objective_ablation': 33, 'small_tokenizer': 12}


def test_every_grid_is_listed():
    assert set(GRID_NAMES) == set(EXPECTED)


@pytest.mark.slow  # composes all 144 XPs (about a minute on 2 cores)
@pytest.mark.parametrize('name', GRID_NAMES)
def test_grid_builds_distinct_xps_at_small_scale(name, monkeypatch):
    set_scale(monkeypatch, True)
    xps = grid_xps(name)
    assert len(xps) == EXPECTED[name]
    assert len({xp.sig for xp in xps}) == len(xps), "two XPs of the grid share a signature"
    for xp in xps:
        assert xp.cfg.solver in ('compression_mmd', 'musicgen_mmd') and xp.cfg.sample_rate == 16000
        assert xp.cfg.seed in (2024, 2025, 2026)


def test_cluster_scale_binds_the_paper_tokenizer(monkeypatch):
    set_scale(monkeypatch, False)
    xps = grid_xps('delay_ablation')
    cfg = xps[0].cfg
    assert (cfg.sample_rate, cfg.rvq.n_q, cfg.rvq.bins, list(cfg.seanet.ratios)) == (32000, 4, 2048, [8, 5, 4, 4])
    assert {str(xp.cfg.mmd.pattern) for xp in xps} == {'delay', 'parallel'}


def test_small_scales_bind_v2_and_v1_keeps_the_old_signatures(monkeypatch):
    # e8d56b9d: the reproduction grid's weight-0 XP of seed 2024 in docs/RESULTS.md, made before issue 21
    monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'small_v1')
    assert 'e8d56b9d' in {xp.sig for xp in grid_xps('reproduction')}
    monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'small')
    xps = grid_xps('reproduction')
    assert {xp.argv[0] for xp in xps} == {'solver=compression/encodec_mmd_small_v2'}
    assert {float(xp.cfg.losses.l1) for xp in xps} == {1.}
    monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'tiny')
    with pytest.raises(ValueError, match="small_v1"):
        grid_xps('reproduction')


def test_explorer_shows_the_metrics_that_matter():
    explorer = importlib.import_module('grids.mmd_sweep').explorer
    names = repr(explorer.get_grid_metrics())
    for key in ('mmd', 'codes_tc', 'codes_mi_mean', 'codes_util_min', 'sisnr', 'msspec'):
        assert key in names


@pytest.mark.parametrize('small', [True, False])
def test_kernel_ablation_runs_every_kernel_with_options_the_estimator_supports(small, monkeypatch):
    import torch
    from audiocraft_mmd.losses import independence_loss
    set_scale(monkeypatch, small)
    xps = grid_xps('kernel_ablation')
    from audiocraft_mmd.train import main
    base = importlib.import_module('grids.kernel_ablation').BASE_OPTIONS['small' if small else 'paper']
    yaml = main.get_xp([f"solver={'compression/encodec_mmd_small_v2' if small else 'compression/encodec_mmd'}"]).cfg.mmd
    assert base == (yaml.estimator, yaml.bandwidth), "BASE_OPTIONS out of date with the base config"
    streams = torch.randn(2, 4, 3, 16, generator=torch.Generator().manual_seed(0))
    kernels = set()
    for xp in xps:
        mmd = xp.cfg.mmd
        kernels.add(str(mmd.kernel))
        # What the solver would call at its first step: it must not raise.
        independence_loss(streams, estimator=mmd.estimator, kernel=mmd.kernel, bandwidth=mmd.bandwidth,
                          scale=mmd.scale, generator=torch.Generator().manual_seed(0))
        if mmd.kernel in ('multiscale_gaussian', 'gaussian'):  # the base setup itself
            assert (mmd.estimator, mmd.bandwidth) == base
    assert kernels == {'multiscale_gaussian', 'gaussian', 'inverse_quadratic', 'linear', 'quadratic'}


def test_factorization_gap_trains_lms_on_the_reproduction_tokenizers(monkeypatch):
    set_scale(monkeypatch, True)
    monkeypatch.setenv('AUDIOCRAFT_MMD_TOKENIZERS', '0123abcd')
    xps = grid_xps('factorization_gap')
    tokenizers = [xp for xp in xps if xp.cfg.solver == 'compression_mmd']
    lms = [xp for xp in xps if xp.cfg.solver == 'musicgen_mmd']
    assert {xp.sig for xp in tokenizers} <= {xp.sig for xp in grid_xps('reproduction')}  # trained once, reused
    assert len(tokenizers) == 6 and len(lms) == 3 * 3 * 2
    index = {xp.sig: i for i, xp in enumerate(xps)}
    for lm in lms:
        reference = str(lm.cfg.compression_model_checkpoint)
        assert reference == '0123abcd' or index[reference] < index[lm.sig]  # listed before its LMs
        assert lm.cfg.musicgen_mmd.early_stop.patience > 0
    assert {str(lm.cfg.codebooks_pattern.modeling) for lm in lms} == {'delay', 'unroll'}
    set_scale(monkeypatch, False)
    monkeypatch.delenv('AUDIOCRAFT_MMD_TOKENIZERS')
    cluster = grid_xps('factorization_gap')
    lm = next(xp for xp in cluster if xp.cfg.solver == 'musicgen_mmd')
    tokenizer = next(xp for xp in cluster if xp.sig == str(lm.cfg.compression_model_checkpoint))
    assert (tokenizer.cfg.rvq.bins, tokenizer.cfg.sample_rate) == (lm.cfg.transformer_lm.card, lm.cfg.sample_rate)


@pytest.mark.parametrize('small', [True, False])
def test_real_music_trains_the_reproduction_settings_on_the_real_preset(small, monkeypatch):
    set_scale(monkeypatch, small)
    xps = grid_xps('real_music')
    assert len(xps) == 6 and len({xp.sig for xp in xps}) == 6
    for xp in xps:
        assert all(str(xp.cfg.datasource[split]) == f'egs/real_music/{split}'
                   for split in ('train', 'valid', 'evaluate', 'generate'))
        assert xp.cfg.seed in (2024, 2025, 2026)
    settings = {(float(xp.cfg.mmd.weight), float(xp.cfg.mmd.warmup.guard)) for xp in xps}
    if small:
        assert settings == {(0., 0.), (3., 0.1)}
        # the reproduction grid's XPs with the dataset changed: the same config otherwise
        assert {xp.sig for xp in xps}.isdisjoint(xp.sig for xp in grid_xps('reproduction'))
        assert {tuple(a for a in xp.argv if not a.startswith('dset=')) for xp in xps} <= {
            tuple(xp.argv) for xp in grid_xps('reproduction')}
    else:
        assert settings == {(0., 0.), (100., 0.)}
        assert {(xp.cfg.sample_rate, xp.cfg.rvq.bins) for xp in xps} == {(32000, 2048)}


@pytest.mark.parametrize('scale', ['small', 'small_v1', 'paper'])
def test_objective_ablation_compares_the_authors_objective_with_ours(scale, monkeypatch):
    small = scale != 'paper'
    if small:
        monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', scale)
    else:
        monkeypatch.delenv('AUDIOCRAFT_MMD_GRID_SCALE', raising=False)
    xps = grid_xps('objective_ablation')
    guarded_only = 6 if scale == 'small' else 0  # v2's guarded weights 100 and 300, one per seed
    assert len(xps) == 27 + guarded_only and len({xp.sig for xp in xps}) == len(xps)
    authors = [xp.cfg.mmd for xp in xps if xp.cfg.mmd.normalization == 'clips' and xp.cfg.mmd.weight > 0]
    assert len(authors) == 18 + guarded_only
    assert all((m.stream, m.schedule, m.paper_every, m.estimator) == ('residual', 'paper', 32, 'permutation')
               for m in authors)
    unguarded = sorted({float(m.weight) for m in authors if float(m.warmup.guard) == 0.})
    assert unguarded == {'small': [0.1, 1., 10.], 'small_v1': [100., 1000., 10000.],
                         'paper': [300., 1000., 3000.]}[scale]
    guarded = sorted({float(m.weight) for m in authors if float(m.warmup.guard) == 0.1})
    assert guarded == unguarded + ([100., 300.] if scale == 'small' else [])
    # the runs of RESULTS.md keep their signatures
    kept = {'small': {'762d0bd4', 'c99c1f9c', '645f5e39', '2a41169e', '32761c38', 'ce88a65b', '77c3ec47',
                      '401bcd18', '03fa975c', '8e8047fd', '9372f58f', 'c059b1ff', '788166e3', '416d1567',
                      'd7f9edd5', 'f4f5f55f', '91e21e51', '757de117', '29868772'},
            'small_v1': {'92a6d01e', '49eff57a', 'cef29d9f'}, 'paper': set()}[scale]
    assert kept <= {xp.sig for xp in xps}
    ours = [xp.cfg.mmd for xp in xps if xp.cfg.mmd.normalization == 'samples' and xp.cfg.mmd.weight > 0]
    assert sorted(str(m.stream) for m in ours) == ['codeword'] * 3 + ['residual'] * 3
    assert all((m.estimator, m.bandwidth, float(m.warmup.guard)) == ('dhsic', 'median', 0.1) for m in ours)
    if small:  # the weight-0 and codeword XPs are the reproduction grid's: trained once
        reproduction = {xp.sig for xp in grid_xps('reproduction')}
        assert len({xp.sig for xp in xps} & reproduction) == 6


def test_paper_scale_sweep_is_in_the_authors_units_and_ablations_keep_paper_v1(monkeypatch):
    set_scale(monkeypatch, False)
    sweep = grid_xps('mmd_sweep')
    assert {str(xp.cfg.mmd.normalization) for xp in sweep} == {'clips'}
    assert sorted({float(xp.cfg.mmd.weight) for xp in sweep}) == [0., 100., 300., 1000., 3000.]
    for xp in grid_xps('estimator_ablation'):
        assert (xp.cfg.mmd.normalization, xp.cfg.mmd.schedule, xp.cfg.mmd.warmup.steps) == ('samples', 'per_step',
                                                                                            2000)


def test_small_tokenizer_tries_the_l1_schedule_and_l1_0_3_at_weight_0_on_both_datasets(monkeypatch):
    set_scale(monkeypatch, True)
    xps = grid_xps('small_tokenizer')
    assert {(str(xp.cfg.datasource.train), float(xp.cfg.mmd.weight)) for xp in xps} == {
        ('egs/real_music/train', 0.), ('egs/embedded_music/train', 0.)}
    settings = {(float(xp.cfg.losses.l1), str(xp.cfg.loss_schedule.get('l1'))) for xp in xps}
    assert settings == {(1., '[[300, 0.1]]'), (0.3, 'None')}
    set_scale(monkeypatch, False)
    with pytest.raises(ValueError, match="--small"):
        grid_xps('small_tokenizer')
