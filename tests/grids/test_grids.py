"""Every grid builds its XPs through the plugin main (what `dora grid NAME --dry_run` does), at both scales."""
import importlib
import pkgutil

import pytest

import grids
from grids.local import grid_xps

GRID_NAMES = sorted(m.name for m in pkgutil.iter_modules(grids.__path__) if not m.name.startswith('_')
                    and m.name != 'local')
EXPECTED = {'mmd_sweep': 18, 'delay_ablation': 9, 'kernel_ablation': 15, 'estimator_ablation': 18,
            'schedule_ablation': 6, 'reproduction': 12}


def test_every_grid_is_listed():
    assert set(GRID_NAMES) == set(EXPECTED)


@pytest.mark.slow  # composes all 78 XPs (about a minute on 2 cores)
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
