"""Every grid builds its XPs through the plugin main (what `dora grid NAME --dry_run` does), at both scales."""
import importlib
import pkgutil

import pytest

import grids
from grids.local import grid_xps

GRID_NAMES = sorted(m.name for m in pkgutil.iter_modules(grids.__path__) if not m.name.startswith('_')
                    and m.name != 'local')
EXPECTED = {'mmd_sweep': 18, 'delay_ablation': 15, 'kernel_ablation': 15, 'estimator_ablation': 18,
            'schedule_ablation': 6, 'reproduction': 21, 'long_training': 9}


def test_every_grid_is_listed():
    assert set(GRID_NAMES) == set(EXPECTED)


@pytest.mark.slow  # composes all 105 XPs (about a minute on 2 cores)
@pytest.mark.parametrize('name', GRID_NAMES)
def test_grid_builds_distinct_xps_at_small_scale(name, monkeypatch):
    monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'small')
    xps = grid_xps(name)
    assert len(xps) == EXPECTED[name]
    assert len({xp.sig for xp in xps}) == len(xps), "two XPs of the grid share a signature"
    for xp in xps:
        assert xp.cfg.solver == 'compression_mmd' and xp.cfg.sample_rate == 16000
        assert xp.cfg.seed in (2024, 2025, 2026)


def test_cluster_scale_binds_the_paper_tokenizer(monkeypatch):
    monkeypatch.delenv('AUDIOCRAFT_MMD_GRID_SCALE', raising=False)
    xps = grid_xps('delay_ablation')
    cfg = xps[0].cfg
    assert (cfg.sample_rate, cfg.rvq.n_q, cfg.rvq.bins, list(cfg.seanet.ratios)) == (32000, 4, 2048, [8, 5, 4, 4])
    assert {str(xp.cfg.mmd.pattern) for xp in xps} == {'delay', 'parallel'}


def test_explorer_shows_the_metrics_that_matter():
    explorer = importlib.import_module('grids.mmd_sweep').explorer
    names = repr(explorer.get_grid_metrics())
    for key in ('mmd', 'codes_tc', 'codes_mi_mean', 'codes_util_min', 'sisnr', 'msspec'):
        assert key in names


@pytest.mark.parametrize('small', [True, False])
def test_kernel_ablation_runs_every_kernel_with_options_the_estimator_supports(small, monkeypatch):
    import torch
    from audiocraft_mmd.losses import independence_loss
    if small:
        monkeypatch.setenv('AUDIOCRAFT_MMD_GRID_SCALE', 'small')
    else:
        monkeypatch.delenv('AUDIOCRAFT_MMD_GRID_SCALE', raising=False)
    xps = grid_xps('kernel_ablation')
    from audiocraft_mmd.train import main
    base = importlib.import_module('grids.kernel_ablation').BASE_OPTIONS['small' if small else 'paper']
    yaml = main.get_xp([f"solver=compression/{'encodec_mmd_small' if small else 'encodec_mmd'}"]).cfg.mmd
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
