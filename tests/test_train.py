"""The Dora main: config composition over AudioCraft's tree, the solver registry, and the clear errors."""
import json
import os
from pathlib import Path
import subprocess
import sys

from omegaconf import OmegaConf
import pytest

from audiocraft_mmd import env
from audiocraft_mmd.train import PLUGIN_CONFIG_DIR, SOLVERS, build_solver, get_solver, get_xp_from_sig, main

SOLVER_FILES = sorted(PLUGIN_CONFIG_DIR.glob('solver/**/*.yaml'))
COMPRESSION_FILES = sorted(PLUGIN_CONFIG_DIR.glob('solver/compression/*.yaml'))
MUSICGEN_FILES = sorted(PLUGIN_CONFIG_DIR.glob('solver/musicgen/*.yaml'))
DSET_FILES = sorted(PLUGIN_CONFIG_DIR.glob('dset/**/*.yaml'))
ALL_FILES = sorted(PLUGIN_CONFIG_DIR.glob('**/*.yaml'))


def _group_name(path: Path) -> str:
    return str(path.relative_to(PLUGIN_CONFIG_DIR / path.relative_to(PLUGIN_CONFIG_DIR).parts[0]).with_suffix(''))


def _resolved(cfg):
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_config_files_exist():
    assert {p.stem for p in SOLVER_FILES} >= {'encodec_mmd', 'encodec_mmd_small', 'encodec_mmd_small_v2',
                                              'encodec_mmd_debug',
                                              'musicgen_mmd_32khz', 'musicgen_mmd_small', 'musicgen_mmd_debug'}
    assert set(SOLVER_FILES) == set(COMPRESSION_FILES) | set(MUSICGEN_FILES)
    assert {p.stem for p in DSET_FILES} >= {'embedded_music', 'embedded_music_large'}


@pytest.mark.parametrize('path', ALL_FILES, ids=lambda p: str(p.relative_to(PLUGIN_CONFIG_DIR)))
def test_no_plugin_file_shadows_audiocraft(path):
    relative = path.relative_to(PLUGIN_CONFIG_DIR)
    assert not (env.audiocraft_config_dir() / relative).exists(), f"{relative} would shadow AudioCraft's file"
    assert relative != Path('config.yaml')


@pytest.mark.parametrize('path', SOLVER_FILES, ids=lambda p: p.stem)
def test_solver_configs_compose_without_missing_values(path):
    xp = main.get_xp([f'solver={_group_name(path)}'])
    cfg = _resolved(xp.cfg)
    assert cfg['solver'] in SOLVERS
    if path in COMPRESSION_FILES:
        assert cfg['mmd']['pattern'] in ('delay', 'parallel')
    else:
        assert cfg['codebooks_pattern']['modeling'] == 'delay' and cfg['transformer_lm']['n_q'] == 4
        assert cfg['compression_model_checkpoint'].startswith('tokenizers/')
    assert cfg['datasource']['train'].startswith('egs/embedded_music')


def test_musicgen_32khz_is_the_papers_setting():
    cfg = main.get_xp(['solver=musicgen/musicgen_mmd_32khz']).cfg
    lm = cfg.transformer_lm
    sizes = (cfg.sample_rate, lm.card, lm.dim, lm.num_layers, cfg.dataset.segment_duration)
    assert sizes == (32000, 2048, 1024, 24, 30)
    assert cfg.conditioners.description.model == 't5'
    assert all(cfg.evaluate.metrics[m] for m in ('fad', 'kld', 'text_consistency'))
    # the tokenizer it names is the 32 kHz compression_mmd config's
    tokenizer = main.get_xp(['solver=compression/encodec_mmd']).cfg
    assert (tokenizer.sample_rate, tokenizer.rvq.bins, tokenizer.rvq.n_q) == (cfg.sample_rate, lm.card, lm.n_q)


@pytest.mark.parametrize('path', DSET_FILES, ids=lambda p: p.stem)
def test_dset_configs_compose_with_audiocraft_solvers(path):
    xp = main.get_xp(['solver=compression/debug', f'dset={_group_name(path)}'])
    cfg = _resolved(xp.cfg)
    assert cfg['solver'] == 'compression'
    for split in ('train', 'valid', 'evaluate', 'generate'):
        assert cfg['datasource'][split] == f'egs/{path.stem}/{split}'


def test_mmd_defaults_reach_every_plugin_solver():
    defaults = OmegaConf.load(PLUGIN_CONFIG_DIR / 'mmd' / 'default.yaml').mmd
    for path in COMPRESSION_FILES:
        cfg = main.get_xp([f'solver={_group_name(path)}']).cfg
        assert set(cfg.mmd.keys()) == set(defaults.keys()), path


def test_signature_depends_on_overrides():
    base = main.get_xp(['solver=compression/encodec_mmd_debug'])
    assert main.get_xp(['solver=compression/encodec_mmd_debug']).sig == base.sig
    assert main.get_xp(['solver=compression/encodec_mmd_debug', 'mmd.weight=3']).sig != base.sig


def test_xp_whose_command_line_now_maps_elsewhere_is_refused():
    # Dora hashes the overrides that differ from the solver's defaults: an XP folder whose stored command line now
    # gives another signature (a default changed since it ran) must not be read as that other XP.
    argv = ['solver=compression/encodec_mmd_debug', 'seed=7']
    real = main.get_xp(argv)
    real.folder.mkdir(parents=True, exist_ok=True)
    (real.folder / '.argv.json').write_text(json.dumps(argv))
    assert get_xp_from_sig(real.sig).sig == real.sig
    stale = real.folder.parent / '0123abcd'
    stale.mkdir(exist_ok=True)
    (stale / '.argv.json').write_text(json.dumps(argv))
    with pytest.raises(RuntimeError, match=f'now maps to XP {real.sig}.*move its folder there'):
        get_xp_from_sig('0123abcd')


def test_unknown_signature_names_the_fix():
    from audiocraft_mmd.train import XPNotFound
    with pytest.raises(XPNotFound, match=r'no XP 00c0ffee in this Dora folder .*run it first'):
        get_xp_from_sig('00c0ffee')


def test_dora_defaults():
    assert os.environ.get('USER')
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in ('0', '1')
    assert main.dora.grid_package == 'grids'
    # conftest points the tests at a temporary folder; AudioCraft's own main follows it.
    assert Path(main.dora.dir) == Path(os.environ['AUDIOCRAFT_MMD_DORA_DIR']).resolve()
    import audiocraft.train
    assert Path(audiocraft.train.main.dora.dir) == Path(main.dora.dir)


def test_default_dora_folder_is_in_the_repo_without_user_settings():
    env_vars = {k: v for k, v in os.environ.items()
                if k not in ('AUDIOCRAFT_MMD_DORA_DIR', 'AUDIOCRAFT_DORA_DIR', 'USER')}
    code = "from audiocraft_mmd.train import main; import os; print(main.dora.dir); print(os.environ['USER'])"
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env_vars)
    assert run.returncode == 0, run.stderr[-2000:]
    folder, user = run.stdout.split()[-2:]
    assert Path(folder) == env.REPO_ROOT / 'outputs' and user


def _solver_for(argv):
    xp = main.get_xp(argv)
    with xp.enter():
        return get_solver(xp.cfg)


def test_registry_dispatches_plugin_names_and_falls_back(embedded_music):
    from audiocraft.solvers.compression import CompressionSolver
    from audiocraft_mmd.solvers.compression_mmd import CompressionMMDSolver

    plugin = _solver_for(['solver=compression/encodec_mmd_debug'])
    assert type(plugin) is CompressionMMDSolver
    vanilla = _solver_for(['solver=compression/debug', 'dset=audio/embedded_music', 'device=cpu',
                           'dataset.num_workers=0'])
    assert type(vanilla) is CompressionSolver


def test_unknown_solver_name_is_a_clear_error():
    cfg = OmegaConf.create({'solver': 'no_such_solver'})
    with pytest.raises(ValueError, match="Unknown solver 'no_such_solver'.*compression_mmd"):
        build_solver(cfg)


def test_missing_manifests_name_the_build_command(tmp_path):
    cfg = OmegaConf.create({'datasource': {s: str(tmp_path / 'egs' / 'embedded_music' / s)
                                           for s in ('train', 'valid', 'evaluate', 'generate')}})
    with pytest.raises(FileNotFoundError, match='make dataset'):
        env.check_datasource(cfg)
    cfg.datasource.train = str(tmp_path / 'elsewhere')
    (tmp_path / 'egs').mkdir(exist_ok=True)
    for split in ('valid', 'evaluate', 'generate'):
        folder = tmp_path / 'egs' / 'embedded_music' / split
        folder.mkdir(parents=True)
        (folder / 'data.jsonl').write_text('')
    with pytest.raises(FileNotFoundError, match='audiocraft.data.audio_dataset'):
        env.check_datasource(cfg)


def test_missing_real_music_manifests_name_its_build_command(tmp_path):
    cfg = OmegaConf.create({'datasource': {s: str(tmp_path / 'egs' / 'real_music' / s)
                                           for s in ('train', 'valid', 'evaluate', 'generate')}})
    with pytest.raises(FileNotFoundError, match='make dataset-real'):
        env.check_datasource(cfg)


def test_audiocraft_without_config_tree_is_a_clear_error(tmp_path):
    # The layout of a wheel install: the package, no config/ next to it.
    fake = tmp_path / 'site' / 'audiocraft'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("__version__ = '1.3.0'\n")
    code = "import audiocraft_mmd.train"
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': str(tmp_path / 'site')})
    assert run.returncode != 0
    assert 'has no config tree' in run.stderr and 'make install' in run.stderr


def test_missing_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    monkeypatch.setattr(sys, 'executable', str(tmp_path / 'python'))
    with pytest.raises(RuntimeError, match='No `ffmpeg` on PATH.*make install'):
        env.ensure_ffmpeg()


def test_ffmpeg_of_the_venv_is_found_without_activation(tmp_path, monkeypatch):
    (tmp_path / 'ffmpeg').write_text('#!/bin/sh\n')
    (tmp_path / 'ffmpeg').chmod(0o755)
    monkeypatch.setenv('PATH', '/nonexistent')
    monkeypatch.setattr(sys, 'executable', str(tmp_path / 'python'))
    assert env.ensure_ffmpeg() == str(tmp_path / 'ffmpeg')
    assert os.environ['PATH'].startswith(str(tmp_path))


def test_small_v2_changes_only_the_l1_weight():
    """Issue 21: the v2 small config is encodec_mmd_small with l1 at 1, nothing else (the old one stays as it was,
    so its XPs keep their signatures and meaning)."""
    v1 = _resolved(main.get_xp(['solver=compression/encodec_mmd_small']).cfg)
    v2 = _resolved(main.get_xp(['solver=compression/encodec_mmd_small_v2']).cfg)
    assert (v1['losses']['l1'], v2['losses']['l1']) == (0.1, 1.)
    v2['losses']['l1'] = v1['losses']['l1']
    assert v2 == v1


@pytest.mark.parametrize('lm, tokenizer', [('musicgen_mmd_small', 'encodec_mmd_small'),
                                           ('musicgen_mmd_small', 'encodec_mmd_small_v2'),
                                           ('musicgen_mmd_debug', 'encodec_mmd_debug')])
def test_small_lms_fit_their_tokenizer_configs(lm, tokenizer):
    cfg = main.get_xp([f'solver=musicgen/{lm}']).cfg
    tok = main.get_xp([f'solver=compression/{tokenizer}']).cfg
    assert (tok.sample_rate, tok.rvq.bins, tok.rvq.n_q) == (cfg.sample_rate, cfg.transformer_lm.card,
                                                            cfg.transformer_lm.n_q)
    assert cfg.conditioners.description.model == 'lut' and cfg.conditioners.description.lut.tokenizer == 'noop'
