"""XP references and the files tools leave in XP folders (audiocraft_mmd.xps): one rule each, checked here."""
import types

import pytest
import torch

from audiocraft_mmd import xps


def test_one_signature_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert xps.signature('3f2a9c1b') == '3f2a9c1b'
    assert xps.signature('//sig/3f2a9c1b') == '3f2a9c1b'
    for other in ['3F2A9C1B', '3f2a9c1', '3f2a9c1b0', 'mmd_sweep', 'outputs/xps/3f2a9c1b', '//pretrained/facebook/x',
                  'checkpoint.th']:
        assert xps.signature(other) is None, other
    (tmp_path / '3f2a9c1b').mkdir()  # a folder of that name where the command runs: a path, not a signature
    assert xps.signature('3f2a9c1b') is None
    assert xps.signature('//sig/3f2a9c1b') == '3f2a9c1b'  # AudioCraft's spelling is never a path


@pytest.fixture
def dora_dir(tmp_path, monkeypatch):
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', tmp_path / 'dora')
    return tmp_path / 'dora'


def test_checkpoints_resolve_from_signatures_folders_and_files(dora_dir, tmp_path, monkeypatch):
    folder = dora_dir / 'xps' / '3f2a9c1b'
    folder.mkdir(parents=True)
    (folder / 'checkpoint.th').write_bytes(b'')
    (folder / 'checkpoint_2.th').write_bytes(b'')
    assert xps.xps_dir() == dora_dir / 'xps'
    for reference in ['3f2a9c1b', '//sig/3f2a9c1b', str(folder), str(folder / 'checkpoint.th')]:
        assert xps.resolve_checkpoint(reference) == folder / 'checkpoint.th', reference
    assert xps.resolve_checkpoint(str(folder / 'checkpoint_2.th')) == folder / 'checkpoint_2.th'
    with pytest.raises(FileNotFoundError, match='No checkpoint for .0123abcd.'):
        xps.resolve_checkpoint('0123abcd')
    monkeypatch.chdir(tmp_path)  # not a signature: not looked up in the Dora folder
    with pytest.raises(FileNotFoundError, match='No checkpoint'):
        xps.resolve_checkpoint('3f2a9c1')
    assert xps.tokenizer_xp('0123abcd') is None  # no such XP here
    assert xps.tokenizer_xp(str(folder)) is None and xps.tokenizer_xp('//pretrained/facebook/encodec_32khz') is None


def test_export_and_result_file_names(tmp_path):
    xp = tmp_path / '3f2a9c1b'
    assert xps.export_folder(xp / 'checkpoint.th') == xp / 'export'
    assert xps.export_folder(xp / 'checkpoint_25.th') == xp / 'export_checkpoint_25'
    assert not xps.is_export(xp) and xps.read_export_record(xp) == {}
    (xp / 'export').mkdir(parents=True)
    (xp / 'export' / 'state_dict.bin').write_bytes(b'')
    (xp / 'export' / 'export.json').write_text('{"lm_sig": "3f2a9c1b"}')
    assert xps.is_export(xp / 'export') and xps.read_export_record(xp / 'export') == {'lm_sig': '3f2a9c1b'}
    assert xps.cross_domain_path(xp, 'audio/real_music') == xp / 'evaluate_audio_real_music.json'
    assert xps.factorization_path(xp) == xp / 'factorization.json'
    assert xps.factorization_path(xp, epoch=2, rank=4, fit='train') == xp / 'factorization_epoch2_rank4_fittrain.json'


def test_shared_conventions():
    assert xps.tokenizer_ref('compression_model_checkpoint="3f2a9c1b"') == '3f2a9c1b'
    assert xps.tokenizer_ref("compression_model_checkpoint='/a/b'") == '/a/b'
    assert xps.tokenizer_ref('seed=3') is None
    assert xps.shown('sisnr', -12.5) == 12.5 and xps.shown('visqol', 3.) == 3. and xps.shown('sisnr', None) is None
    assert xps.is_lm(types.SimpleNamespace(solver='musicgen_mmd'))
    assert not xps.is_lm(types.SimpleNamespace(solver='compression_mmd'))


def test_state_hash_sees_buffers():
    """An RVQ's codebooks are buffers: a tokenizer whose codebooks changed must not hash the same."""
    module = torch.nn.Linear(2, 2)
    module.register_buffer('codebook', torch.zeros(3, 2))
    before = xps.state_hash(module)
    assert xps.state_hash(module) == before
    module.codebook[0, 0] = 1.
    assert xps.state_hash(module) != before


def test_targets_are_a_grid_or_signatures(monkeypatch):
    from audiocraft_mmd import train
    monkeypatch.setattr(xps, 'grid_xps', lambda name: [f'grid {name}'])
    monkeypatch.setattr(train, 'get_xp_from_sig', lambda sig: f'xp {sig}')
    assert xps.resolve_targets(['mmd_sweep']) == ['grid mmd_sweep']
    assert xps.resolve_targets(['3f2a9c1b']) == ['xp 3f2a9c1b']
    assert xps.resolve_targets(['3f2a9c1b', '//sig/0123abcd']) == ['xp 3f2a9c1b', 'xp 0123abcd']



def test_scale_flags_set_the_grid_scale(monkeypatch):
    import argparse
    import os
    parser = argparse.ArgumentParser()
    parser.add_argument('targets', nargs='+')
    xps.add_scale_arguments(parser)
    assert parser.parse_args(['g']).scale is None
    assert parser.parse_args(['g', '--small']).scale == 'small'
    assert parser.parse_args(['g', '--small_v1']).scale == 'small_v1'
    with pytest.raises(SystemExit):
        parser.parse_args(['g', '--small', '--small_v1'])
    monkeypatch.setattr(xps, 'grid_xps', lambda name: [os.environ['AUDIOCRAFT_MMD_GRID_SCALE']])
    monkeypatch.delenv('AUDIOCRAFT_MMD_GRID_SCALE', raising=False)
    assert xps.resolve_targets(['reproduction'], scale='small_v1') == ['small_v1']
