"""Tests for the offline music21 + SoundFont dataset builder (audiocraft_mmd.data.embedded_music)."""
import hashlib
import json
from pathlib import Path
import shutil

import numpy as np
import pytest
import soundfile as sf

from audiocraft_mmd.data import check, common
from audiocraft_mmd.data import embedded_music as em

NAME = 'embedded_music'
SEED = 1234
MAX_PIECES = 8
# MusicInfo fields (besides the optional 'keywords') that MusicDataset requires with
# info_fields_required=True; the segment fields (meta, seek_time, ...) come from the audio itself.
MUSIC_FIELDS = ['title', 'artist', 'key', 'bpm', 'genre', 'moods', 'keywords', 'description', 'name',
                'instrument']


def _build(root: Path, seed: int = SEED, **kwargs) -> dict:
    kwargs.setdefault('max_pieces', MAX_PIECES)
    return em.build(preset='small', seed=seed, out=root, workers=2, verbose=False, **kwargs)


def _manifest(root: Path, split: str):
    path = em.manifest_dir(NAME, root) / split / 'data.jsonl'
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return path, lines, [json.loads(ln) for ln in lines]


def _hashes(root: Path) -> dict:
    adir = em.audio_dir(NAME, root)
    return {str(p.relative_to(adir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(adir.rglob('*')) if p.is_file()}


def _sidecars(root: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in em.audio_dir(NAME, root).rglob('*.json')}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('em_a')
    return root, _build(root)


def test_summary_and_splits(built):
    root, summary = built
    assert summary['num_failed'] == 0, summary['failed']
    assert summary['total_pieces'] == MAX_PIECES
    pieces = {}
    for split in em.SPLITS:
        _, _, metas = _manifest(root, split)
        assert metas, f'split {split} is empty'
        assert summary['splits'][split]['pieces'] == len(metas)
        pieces[split] = {Path(m['path']).stem for m in metas}
    all_pieces = [p for s in pieces.values() for p in s]
    assert len(all_pieces) == len(set(all_pieces)) == MAX_PIECES, 'a piece is in two splits'
    # Splits are also disjoint by group (settings of one chorale tune / movements of one work).
    sidecars = _sidecars(root)
    groups = {s: {sidecars[p]['group'] for p in ps} for s, ps in pieces.items()}
    for a in em.SPLITS:
        for b in em.SPLITS:
            if a < b:
                assert not groups[a] & groups[b]
    assert em.is_built(NAME, root)
    assert summary['total_hours'] > 0


def test_audio_matches_manifest(built):
    root, _ = built
    for split in em.SPLITS:
        _, _, metas = _manifest(root, split)
        for m in metas:
            path = Path(m['path'])
            assert path.is_absolute() and path.exists()
            assert path.parent == em.audio_dir(NAME, root) / split
            info = sf.info(str(path))
            assert info.samplerate == m['sample_rate'] == 32000
            assert info.channels == 1
            assert info.subtype == 'PCM_16'
            assert abs(info.frames / info.samplerate - m['duration']) < 1e-6
            assert m['duration'] > 5
            wav, _ = sf.read(str(path), dtype='float32')
            peak = float(np.abs(wav).max())
            rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
            assert peak <= 1.0 and peak < 0.95, f'{path.name} clipped (peak {peak})'
            assert abs(peak - m['amplitude']) < 1e-4
            assert rms > 0.02, f'{path.name} (almost) silent (rms {rms})'
            # no long silent stretch inside the piece (1 s windows)
            win = wav[: len(wav) // 32000 * 32000].reshape(-1, 32000)
            assert (np.sqrt((win ** 2).mean(axis=1)) > 1e-3).mean() > 0.9


def test_sidecars_complete(built):
    root, _ = built
    sidecars = _sidecars(root)
    assert len(sidecars) == MAX_PIECES
    for stem, d in sidecars.items():
        for field in MUSIC_FIELDS:
            assert field in d, (stem, field)
        for field in ['title', 'artist', 'key', 'genre', 'description', 'name', 'instrument']:
            assert isinstance(d[field], str) and d[field].strip(), (stem, field)
        assert d['name'] == stem
        assert d['genre'] == 'classical'
        assert isinstance(d['bpm'], float) and 20 < d['bpm'] < 300
        assert isinstance(d['moods'], list) and d['moods']
        assert isinstance(d['keywords'], list) and d['keywords']
        assert d['key'].split()[-1] in ('major', 'minor')
        assert d['sample_rate'] == 32000 and d['file_extension'] == 'wav'
        assert len(d['instruments']) == d['num_voices'] == len(d['gm_programs'])
        assert d['source'].startswith('music21 corpus: ')


def test_deterministic_and_seed_dependent(built, tmp_path_factory):
    """Same seed => byte-identical files (built in another folder); another seed => other audio."""
    root, summary = built
    root_b = tmp_path_factory.mktemp('em_b')
    summary_b = _build(root_b)
    assert _hashes(root) == _hashes(root_b), 'same seed must give byte-identical files'
    for split in em.SPLITS:
        assert summary['splits'][split]['pieces_list'] == summary_b['splits'][split]['pieces_list']

    # A different seed changes the rendering (tempo, velocities) and, for some pieces, the ensemble.
    sidecars = _sidecars(root)
    changed_programs = False
    for stem in sorted(sidecars):
        path = sidecars[stem]['source'].split(': ', 1)[1]
        wav, info = em.render_piece(path, SEED + 1)
        on_disk, _ = sf.read(str(next(em.audio_dir(NAME, root).rglob(f'{stem}.wav'))), dtype='float32')
        assert len(wav) != len(on_disk) or not np.allclose(wav, on_disk, atol=1e-3)
        if info['gm_programs'] != sidecars[stem]['gm_programs']:
            changed_programs = True
            break
    assert changed_programs


def test_rendering_independent_of_other_pieces(built):
    """A piece renders the same whichever other pieces are in the set."""
    root, _ = built
    sidecars = _sidecars(root)
    stem = sorted(sidecars)[0]
    path = sidecars[stem]['source'].split(': ', 1)[1]
    wav, info = em.render_piece(path, SEED)
    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16)
    stored = next(em.audio_dir(NAME, root).rglob(f'{stem}.wav'))
    on_disk, _ = sf.read(str(stored), dtype='int16')
    np.testing.assert_array_equal(pcm, on_disk)
    assert info['description'] == sidecars[stem]['description']


def test_idempotent_and_status(built, tmp_path):
    root, _ = built
    again = _build(root)
    assert again['already_built'] is True
    assert again['elapsed_s'] < 5
    # A different config is not "built".
    assert not em.is_built(NAME, root, config=em._config('small', SEED + 1, MAX_PIECES, None))
    assert em.require_built(NAME, root) == em.manifest_dir(NAME, root)
    assert not em.is_built(NAME, tmp_path)
    with pytest.raises(FileNotFoundError, match=r'python -m audiocraft_mmd\.data\.embedded_music'):
        em.require_built(NAME, tmp_path)
    assert em.main(['--check', '--out', str(tmp_path)]) == 1
    assert em.main(['--check', '--out', str(root), '--preset', 'small']) == 0
    assert 'dataset missing' in em.missing_message('embedded_music_large')
    assert '--preset large' in em.missing_message('large')


def test_record_names_its_rebuild_command_and_old_records_still_read(built, tmp_path):
    root, _ = built
    mdir = em.manifest_dir(NAME, root)
    record = json.loads((mdir / common.RECORD).read_text())
    assert record['rebuild'] == (f'python -m audiocraft_mmd.data.embedded_music --max-pieces {MAX_PIECES} '
                                 f'--out {root} --force')
    assert em.rebuild_command('small', em.DEFAULT_SEED, None, common.REPO_ROOT, None, NAME) == \
        'python -m audiocraft_mmd.data.embedded_music --force'
    assert em.rebuild_command('large', 7, None, root, None, 'embedded_music_large') == (
        f'python -m audiocraft_mmd.data.embedded_music --preset large --seed 7 --out {root} --force')
    assert em.rebuild_command('small', SEED, None, root, None, 'renamed') is None  # no --name on the command line
    # a dataset built before the builders shared a record name (`build_info.json`) and wrote their command
    old = em.manifest_dir(NAME, tmp_path)
    shutil.copytree(mdir, old)
    (old / common.RECORD).unlink()
    legacy = {key: value for key, value in record.items() if key != 'rebuild'}
    (old / 'build_info.json').write_text(json.dumps(legacy))
    assert common.read_record(NAME, tmp_path) == legacy
    assert em.is_built(NAME, tmp_path, config=record['config'])
    with open(old / 'train' / 'data.jsonl', 'a') as manifest:
        manifest.write(json.dumps(common.manifest_entry(tmp_path / 'gone.wav', 1., 32000, 0.5)) + '\n')
    _, [bad] = check.check_manifests([old])
    assert bad.path == str(tmp_path / 'gone.wav') and 'remove line' in bad.fix
    assert bad.fix.endswith('rebuild the dataset with the command that built it (with --force)')


def test_failures_are_skipped_and_counted(tmp_path):
    # bwv277.krn: repeats cannot be expanded; the Josquin .abc file parses to an Opus (no parts);
    # the last one does not exist.
    pieces = ['bach/bwv269.mxl', 'bach/bwv277.krn', 'josquin/milleRegrets.abc', 'bach/bwv347.mxl',
              'bach/bwv153.1.mxl', 'no_such_composer/no_such_piece', 'bach/bwv86.6.mxl']
    summary = em.build(preset='small', pieces=pieces, out=tmp_path, workers=1, verbose=False)
    failed = {f['piece']: f['reason'] for f in summary['failed']}
    assert summary['num_failed'] == 3
    assert set(failed) == {'bach_bwv277', 'josquin_milleRegrets', 'no_such_composer_no_such_piece'}
    assert 'repeat' in failed['bach_bwv277'].lower()
    assert 'FileNotFoundError' in failed['no_such_composer_no_such_piece']
    assert summary['total_pieces'] == 4
    assert all(summary['splits'][s]['pieces'] >= 1 for s in em.SPLITS)
    info = json.loads((em.manifest_dir(NAME, tmp_path) / common.RECORD).read_text())
    assert info['summary']['num_failed'] == 3
    assert info['rebuild'] is None  # an explicit piece list: only the Python API rebuilds it


def test_too_few_pieces_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match='at least 4'):
        em.build(preset='small', pieces=['no_such/piece'], out=tmp_path, workers=1, verbose=False)


def test_preset_lists():
    small = em.preset_pieces('small')
    assert len(small) == len(set(small)) == em.SMALL_NUM_CHORALES + len(em.SMALL_EXTRAS)
    assert all(p.startswith('bach/') for p in small[:8])
    large = em.preset_pieces('large')
    assert len(large) == len(set(large)) > 400
    assert sum(em.collection_of(p) == 'chorale' for p in large) >= 340
    assert {em.collection_of(p) for p in large} == {'chorale', 'quartet', 'madrigal', 'other'}
    with pytest.raises(ValueError):
        em.preset_pieces('huge')


def test_manifests_load_with_audiocraft(built):
    audio_dataset = pytest.importorskip('audiocraft.data.audio_dataset')
    root, _ = built
    for split in em.SPLITS:
        path, lines, _ = _manifest(root, split)
        metas = audio_dataset.load_audio_meta(path)
        assert len(metas) == len(lines)
        for m, line in zip(metas, lines):
            # exactly the serialisation of audiocraft's save_audio_meta
            assert json.dumps(m.to_dict()) == line
            assert m.sample_rate == 32000 and m.duration > 0


def test_sidecars_load_with_audiocraft_music_dataset(built):
    music_dataset = pytest.importorskip('audiocraft.data.music_dataset')
    root, _ = built
    from audiocraft.data.audio_dataset import AudioMeta
    for stem, d in _sidecars(root).items():
        # What MusicDataset.__getitem__ does: sidecar updated with the segment info, all fields required.
        n = int(d['duration'] * 32000)
        segment = dict(meta=AudioMeta(path=f'{stem}.wav', duration=d['duration'], sample_rate=32000),
                       seek_time=0.0, n_frames=n, total_frames=n, sample_rate=32000, channels=1,
                       audio_tokens=None)
        info = music_dataset.MusicInfo.from_dict({**d, **segment}, fields_required=True)
        assert info.name == stem and info.description and info.artist and info.title
        assert info.bpm == d['bpm'] and info.key == d['key'].lower() and info.moods
    # End to end: MusicDataset (info_fields_required=True) reads audio + sidecar via the manifest.
    ds = music_dataset.MusicDataset.from_meta(
        str(em.manifest_dir(NAME, root) / 'train'), segment_duration=2.0, sample_rate=32000, channels=1,
        num_samples=2, shuffle=False, info_fields_required=True)
    wav, info = ds[0]
    assert tuple(wav.shape) == (1, 64000)
    assert info.description and info.instrument and info.genre == 'classical'
    attrs = info.to_condition_attributes()
    assert attrs.text['description'] == info.description


def test_loudness_normalised(built):
    root, _ = built
    for path in em.audio_dir(NAME, root).rglob('*.wav'):
        wav, sr = sf.read(str(path), dtype='float32')
        lufs = em.integrated_loudness(wav, sr)
        peak_db = 20 * np.log10(np.abs(wav).max())
        # on target, or quieter because the peak hit the -1 dBFS ceiling
        assert abs(lufs - em.TARGET_LUFS) < 0.1 or (lufs < em.TARGET_LUFS and peak_db > -1.1), (path, lufs)


def test_loudness_meter_known_answers():
    """BS.1770: a full-scale 997 Hz sine in one channel reads -3.01 LUFS. pyloudnorm designs its K-weighting
    filters from analog parameters (not the standard's 48 kHz coefficients) and reads 0.04-0.05 LU lower, at
    48 kHz and 32 kHz alike (so did the copy it replaced). Silence and < 400 ms of audio read -inf."""
    for sr in (48000, 32000):
        t = np.arange(10 * sr) / sr
        assert abs(em.integrated_loudness(np.sin(2 * np.pi * 997 * t), sr) - (-3.01)) < 0.06
        assert abs(em.integrated_loudness(0.1 * np.sin(2 * np.pi * 997 * t), sr) - (-23.01)) < 0.06
    assert em.integrated_loudness(np.zeros(32000), 32000) == float('-inf')
    assert em.integrated_loudness(np.ones(1000), 32000) == float('-inf')
