"""Cross-domain evaluation (`python -m audiocraft_mmd.evaluate --dset NAME`): the argument checks, and the report
reading its files. The evaluation itself trains a tokenizer: tests/test_integration.py (slow)."""
import json

import pytest

from audiocraft_mmd import evaluate, xps


def test_dsets_are_the_config_files_of_both_trees():
    available = xps.available_dsets()
    assert {'audio/real_music', 'audio/embedded_music', 'audio/embedded_music_large'} <= set(available)  # ours
    assert {'audio/example', 'audio/musiccaps_32khz'} <= set(available)  # AudioCraft's
    assert 'default' not in available and 'audio/default' not in available  # abstract: `???` splits


def test_commit_with_dset_is_refused_before_any_xp_is_loaded(capsys):
    # `0123abcd` is no XP: the checks come first
    with pytest.raises(SystemExit) as exc:
        evaluate.main(['--commit', '--dset', 'audio/real_music', '0123abcd'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # the command line and the Python API say the same thing (one check)
    assert '--commit' in err and 'evaluate_audio_real_music.json' in err and 'Drop --commit' in err
    with pytest.raises(ValueError, match=r"evaluate_audio_real_music\.json .*Drop --commit"):
        evaluate.evaluate_xp('0123abcd', commit=True, dset='audio/real_music')
    with pytest.raises(SystemExit):
        evaluate.main(['--commit', '--tokenizer', 'exported.bin', '0123abcd'])
    assert 'not with --tokenizer' in capsys.readouterr().err


def test_unknown_dset_names_the_available_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(['--dset', 'audio/real', '0123abcd'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown dataset preset 'audio/real'" in err
    assert 'audio/real_music' in err and 'audio/embedded_music' in err and 'audio/musiccaps_32khz' in err
    with pytest.raises(ValueError, match='available: .*audio/real_music'):
        evaluate.evaluate_xp('0123abcd', dset='real_music')


def test_cross_domain_file_name(tmp_path):
    assert xps.cross_domain_path(tmp_path, 'audio/real_music') == tmp_path / 'evaluate_audio_real_music.json'


def test_report_reads_the_cross_domain_file_instead_of_the_history(tmp_path, monkeypatch, capsys):
    from audiocraft_mmd import report
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', tmp_path)
    xp = main.get_xp(['solver=compression/encodec_mmd_debug'])
    xp.folder.mkdir(parents=True)
    own = {'sisnr': -5., 'codes_tc_excess': 0.2, 'codes_mi_12': 0.1}
    (xp.folder / 'history.json').write_text(json.dumps([{'train': {'l1': 1.}, 'valid': {'msspec': 2.},
                                                         'evaluate': own}]))
    real = {'sisnr': 20., 'codes_tc_excess': 0.8, 'codes_mi_12': 0.3}
    xps.cross_domain_path(xp.folder, 'audio/real_music').write_text(json.dumps(
        {'sig': xp.sig, 'dset': 'audio/real_music', 'epochs': 1, 'evaluate': real}))

    [row], = report.collect([xp]).values()
    assert (row['evaluate/sisnr'], row['evaluate/codes_tc_excess'], row['mi']) == (5., 0.2, {(1, 2): 0.1})
    [row], = report.collect([xp], dset='audio/real_music').values()
    assert (row['evaluate/sisnr'], row['evaluate/codes_tc_excess'], row['mi']) == (-20., 0.8, {(1, 2): 0.3})
    assert row['valid/msspec'] == 2.  # the other stages still come from the history
    assert capsys.readouterr().err == ''
    # not evaluated there: no value (never the history's), and the command that fills it
    [row], = report.collect([xp], dset='audio/embedded_music').values()
    assert row['evaluate/sisnr'] is None and row['mi'] == {}
    assert f'python -m audiocraft_mmd.evaluate --dset audio/embedded_music {xp.sig}' in capsys.readouterr().err
    # a history longer than the evaluated checkpoint's: said, with the command to refresh it
    (xp.folder / 'history.json').write_text(json.dumps([{'train': {}}, {'train': {}, 'evaluate': own}]))
    report.collect([xp], dset='audio/real_music')
    assert 'checkpoint at epoch 1, the table\'s history has 2 epochs' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.main([xp.sig, '--dset', 'audio/nope'])
    assert 'available: ' in capsys.readouterr().err
