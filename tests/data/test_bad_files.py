"""Bad files in a manifest: what AudioCraft does with them, and this package's checker naming each one and its fix.

The manifests are small temporary ones made from real files of the built small set, plus a missing path, a
truncated copy, a text file renamed .wav and a file at 16 kHz listed as 32 kHz.
"""
import json
import logging
from pathlib import Path

import pytest
import soundfile as sf

from audiocraft_mmd.data import embedded_music as em

BAD_KINDS = ('missing', 'truncated', 'text', 'sample_rate')


@pytest.fixture(scope='module')
def real_entries(embedded_music):
    """Two manifest lines of real files of the built small set (train split)."""
    manifest = em.manifest_dir(embedded_music) / 'train' / 'data.jsonl'
    return [json.loads(line) for line in manifest.read_text().splitlines()[:2]]


def _bad_entry(kind: str, real: dict, folder: Path) -> dict:
    """A manifest line (the real file's metadata) pointing at a bad file of `kind` written into `folder`."""
    src = Path(real['path'])
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(real)
    target = folder / f'{kind}.wav'
    if kind == 'missing':
        pass
    elif kind == 'truncated':       # an interrupted copy: the first 5 % of the bytes
        data = src.read_bytes()
        target.write_bytes(data[: len(data) // 20])
    elif kind == 'text':
        target.write_text("this is not audio\n" * 20)
    elif kind == 'sample_rate':     # same music and duration at 16 kHz; the manifest still says 32 kHz
        wav, sr = sf.read(str(src), dtype='int16')
        sf.write(str(target), wav[::2], sr // 2, subtype='PCM_16')
    else:
        raise ValueError(kind)
    meta['path'] = str(target)
    return meta


def _write_manifest(folder: Path, entries) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / 'data.jsonl'
    path.write_text(''.join(json.dumps(e) + '\n' for e in entries))
    return path


@pytest.fixture
def bad_manifest(tmp_path, real_entries):
    """One split folder: two real files, then one bad file of each kind (lines 3-6, in BAD_KINDS order)."""
    audio = tmp_path / 'audio'
    audio.mkdir()
    entries = list(real_entries) + [_bad_entry(k, real_entries[0], audio) for k in BAD_KINDS]
    return _write_manifest(tmp_path / 'egs' / 'mine' / 'train', entries)


# ---- what AudioCraft 1.3.0 does today (these pass with or without this package's checker) -------------------
def _one_file_dataset(kind, real, tmp_path, **kwargs):
    from audiocraft.data.audio_dataset import AudioDataset
    entry = _bad_entry(kind, real, tmp_path)
    manifest = _write_manifest(tmp_path / kind, [entry])
    kwargs.setdefault('segment_duration', 1.0)
    return AudioDataset.from_meta(str(manifest.parent), sample_rate=32000, channels=1, num_samples=20,
                                  shuffle=False, **kwargs)


def test_audiocraft_missing_file_raises_after_retries(tmp_path, real_entries, caplog):
    import av
    dataset = _one_file_dataset('missing', real_entries[0], tmp_path, max_read_retry=3)  # loads fine
    with caplog.at_level(logging.WARNING), pytest.raises(av.error.FileNotFoundError):
        dataset[0]
    assert sum('Error opening file' in r.getMessage() for r in caplog.records) == 3   # one per retry


def test_audiocraft_text_file_raises_decoder_error(tmp_path, real_entries):
    import av
    dataset = _one_file_dataset('text', real_entries[0], tmp_path, max_read_retry=2)
    with pytest.raises(av.error.InvalidDataError):
        dataset[0]


def test_audiocraft_truncated_file_bare_assertion(tmp_path, real_entries):
    """Seeking past the real end of a truncated file fails on a message-less `assert frames` in `_av_read`;
    segments that land inside the remaining 5 % read fine, and the whole-file path does not notice at all."""
    dataset = _one_file_dataset('truncated', real_entries[0], tmp_path, max_read_retry=1)
    errors = []
    for index in range(20):
        try:
            dataset[index]
        except AssertionError as exc:
            errors.append(str(exc))
    assert errors and set(errors) == {''}
    whole = _one_file_dataset('truncated', real_entries[0], tmp_path / 'whole', segment_duration=None)
    wav = whole[0]
    assert wav.shape[-1] < 0.1 * real_entries[0]['duration'] * 32000


def test_audiocraft_resamples_other_rate_silently(tmp_path, real_entries):
    dataset = _one_file_dataset('sample_rate', real_entries[0], tmp_path)
    wav = dataset[0]
    assert tuple(wav.shape) == (1, 32000)    # no error, no warning: upsampled from 16 kHz


# ---- the checker ------------------------------------------------------------------------------------------------
def test_checker_names_each_bad_file(bad_manifest):
    from audiocraft_mmd.data import check
    total, bad = check.check_manifests([bad_manifest.parent])
    assert total == 6
    by_line = {b.line: b for b in bad}
    assert sorted(by_line) == [3, 4, 5, 6]
    audio = bad_manifest.parent.parent.parent.parent / 'audio'
    for line, kind in zip((3, 4, 5, 6), BAD_KINDS):
        assert by_line[line].path == str(audio / f'{kind}.wav')
        assert f'remove line {line} of {bad_manifest}' in by_line[line].fix
    assert 'not found' in by_line[3].problem
    assert 'truncated' in by_line[4].problem and 'manifest says' in by_line[4].problem
    assert 'not an audio file' in by_line[5].problem
    assert '16000 Hz' in by_line[6].problem and '32000 Hz' in by_line[6].problem
    # the full decode finds the same files
    assert [b.line for b in check.check_manifests([bad_manifest], full=True)[1]] == [3, 4, 5, 6]
    with pytest.raises(check.BadManifestError, match='4 bad audio files'):
        check.require_clean([bad_manifest.parent])


def test_checker_clean_manifest(tmp_path, real_entries):
    from audiocraft_mmd.data import check
    manifest = _write_manifest(tmp_path / 'ok', real_entries)
    assert check.check_manifests([manifest]) == (2, [])
    assert check.check_manifests([manifest], full=True) == (2, [])
    assert check.require_clean([tmp_path / 'ok']) == 2
    with pytest.raises(FileNotFoundError, match='no AudioCraft manifest'):
        check.manifest_files(tmp_path / 'nothing_here')


def test_builder_check_cli(bad_manifest, tmp_path, real_entries, capsys):
    assert em.main(['--check', str(bad_manifest.parent)]) == 1
    out = capsys.readouterr().out
    assert '4 bad audio files' in out
    for kind in BAD_KINDS:
        assert f'{kind}.wav' in out
    ok = _write_manifest(tmp_path / 'ok', real_entries)
    assert em.main(['--check', str(ok.parent)]) == 0
    assert '2 audio files open' in capsys.readouterr().out


def test_builder_check_names_rebuild_command(tmp_path, capsys):
    """In a dataset the builder wrote, the fix is its rebuild command (with the dataset's own options)."""
    summary = em.build(preset='small', max_pieces=5, out=tmp_path, workers=1, verbose=False)
    assert em.main(['--check', '--out', str(tmp_path)]) == 0
    capsys.readouterr()
    victim = Path(summary['audio_dir']) / 'train' / (summary['splits']['train']['pieces_list'][0] + '.wav')
    victim.write_bytes(victim.read_bytes()[:1000])
    assert em.main(['--check', '--out', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(victim) in out and 'truncated' in out
    assert f'python -m audiocraft_mmd.data.embedded_music --max-pieces 5 --out {tmp_path} --force' in out
    victim.unlink()
    assert em.main(['--check', '--out', str(tmp_path)]) == 1
    assert 'file not found' in capsys.readouterr().out


def test_doctor_dataset_check_names_bad_file(bad_manifest):
    from audiocraft_mmd import doctor
    with pytest.raises(RuntimeError, match='truncated'):
        doctor.check_dataset(bad_manifest.parent.parent)
    ok_dir = bad_manifest.parent.parent.parent / 'ok'
    _write_manifest(ok_dir / 'train', [json.loads(bad_manifest.read_text().splitlines()[0])])
    assert '1 files' in doctor.check_dataset(ok_dir)


def test_evaluate_checks_its_manifest_first(bad_manifest, tmp_path, real_entries):
    from omegaconf import OmegaConf
    from audiocraft_mmd import evaluate
    from audiocraft_mmd.data import check
    cfg = OmegaConf.create({'datasource': {'evaluate': str(bad_manifest.parent)}})
    with pytest.raises(check.BadManifestError) as info:
        evaluate.check_evaluate_data(cfg)
    assert len(info.value.bad) == 4 and 'not found' in str(info.value)
    ok = _write_manifest(tmp_path / 'ok', real_entries)
    evaluate.check_evaluate_data(OmegaConf.create({'datasource': {'evaluate': str(ok.parent)}}))
    # a missing manifest is left to env.check_datasource (which names the build command)
    evaluate.check_evaluate_data(OmegaConf.create({'datasource': {'evaluate': str(tmp_path / 'none')}}))


@pytest.mark.slow
def test_training_names_a_truncated_file_at_start(tmp_path, real_entries):
    # The debug run on a train manifest whose third file is an interrupted copy: AudioCraft would meet it mid-
    # training with a bare AssertionError; the run stops at start, naming the file, its line and the fix.
    import os
    import subprocess
    import sys
    from audiocraft_mmd.env import REPO_ROOT
    entries = list(real_entries) + [_bad_entry('truncated', real_entries[0], tmp_path / 'audio')]
    manifest = _write_manifest(tmp_path / 'egs' / 'train', entries)
    dora_dir = tmp_path / 'dora'
    env = {**os.environ, 'AUDIOCRAFT_MMD_DORA_DIR': str(dora_dir), 'AUDIOCRAFT_DORA_DIR': str(dora_dir),
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, '-m', 'dora', 'run', 'solver=compression/encodec_mmd_debug',
                          f'datasource.train={manifest.parent}'], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert 'truncated.wav' in output and 'line 3' in output and 'fix:' in output
    assert not list(dora_dir.glob('xps/*/checkpoint*.th'))  # nothing trained
