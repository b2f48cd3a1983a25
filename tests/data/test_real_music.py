"""Tests of the real-music dataset builder (audiocraft_mmd.data.real_music).

The fast tests build tiny synthetic .deb packages (Ogg files written with soundfile) and run the whole pipeline on
them offline: --debs, sha256 checks, both extractors, decoding, loudness, splits, manifests, sidecars, attribution,
the build record, rerun and --force. The slow test fetches the smallest pinned package (asc-music, 10 MB) with
apt-get.
"""
import io
import json
from pathlib import Path
import random
import re
import tarfile
import time
from urllib.parse import unquote
import zipfile

import numpy as np
import pytest
import soundfile as sf

from audiocraft_mmd.data import common, debian
from audiocraft_mmd.data import real_music as rm

SR_SOURCE = 44100
MUSIC_FIELDS = ['title', 'artist', 'key', 'bpm', 'genre', 'moods', 'keywords', 'description', 'name', 'instrument']


# --------------------------------------------------------------------------------------------
# Synthetic packages.
# --------------------------------------------------------------------------------------------
def _ogg(seconds: float, freq: float, seed: int, silent: bool = False) -> bytes:
    """A stereo Ogg Vorbis file: a chord on `freq` with a little noise (distinct bytes per call)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR_SOURCE)) / SR_SOURCE
    x = sum(0.2 * np.sin(2 * np.pi * freq * k * t) for k in (1, 1.25, 1.5)) + 0.01 * rng.standard_normal(len(t))
    x = np.stack([x, 0.8 * x], axis=1) * (0.0 if silent else 1.0)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR_SOURCE, format='OGG', subtype='VORBIS')
    return buf.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f'{name:<16}{0:<12}{0:<6}{0:<6}{"100644":<8}{len(data):<10}`\n'.encode()
    return header + data + (b'\n' if len(data) % 2 else b'')


def _make_deb(path: Path, files: dict, links: dict = None) -> None:
    """A minimal Debian binary package (debian-binary, control.tar.gz, data.tar.xz) holding `files`."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode='w:xz') as tar:
        dirs = sorted({'/'.join(p.split('/')[:i]) for p in [*files, *(links or {})]
                       for i in range(1, p.count('/') + 1)})
        for d in dirs:
            info = tarfile.TarInfo(f'./{d}/')
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(f'./{name}')
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(f'./{name}')
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode='w:gz') as tar:
        text = f'Package: {path.name.split("_")[0]}\nVersion: 1.0-1\nArchitecture: all\n'.encode()
        info = tarfile.TarInfo('./control')
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    path.write_bytes(b'!<arch>\n' + _ar_member('debian-binary', b'2.0\n')
                     + _ar_member('control.tar.gz', control.getvalue())
                     + _ar_member('data.tar.xz', data.getvalue()))


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: synth

Files: *
Copyright: 2001-2003 Holder A
License: GPL-2+

Files: music/b.ogg
Copyright: 2010, Holder B
           Holder C
License: CC-BY-SA-3.0
 Creative Commons Attribution-ShareAlike 3.0
 .
 (text)

Files: debian/*
Copyright: 2020 Packager
License: GPL-2+
"""


def _synthetic(folder: Path) -> dict:
    """Three synthetic packages in `folder`; returns name -> Package (with their real sha256 and size)."""
    orchestra = {
        'usr/share/synth/music/a.ogg': _ogg(11, 220, 1),
        'usr/share/synth/music/b.ogg': _ogg(11.5, 247, 2),
        'usr/share/synth/music/c.ogg': _ogg(12, 262, 3),
        'usr/share/synth/music/c_revisited.ogg': _ogg(12, 294, 4),
        'usr/share/synth/music/d.ogg': _ogg(11, 330, 5),
        'usr/share/synth/music/short.ogg': _ogg(3, 349, 6),                # a stinger: skipped as short
        'usr/share/synth/music/silence.ogg': _ogg(11, 392, 7, silent=True),  # skipped as silent
        'usr/share/synth/sounds/hit.ogg': _ogg(11, 440, 8),                # a sound effect: not music
        'usr/share/doc/synth-orchestra/copyright': DEP5.encode(),
    }
    orchestra['usr/share/synth/music/copy_of_a.ogg'] = orchestra['usr/share/synth/music/a.ogg']  # duplicate
    pk3 = io.BytesIO()
    with zipfile.ZipFile(pk3, 'w') as zf:
        for i, stem in enumerate(['alpha', 'beta', 'gamma', 'delta']):
            zf.writestr(f'sound/cdtracks/{stem}.ogg', _ogg(11 + i / 4, 500 + 40 * i, 20 + i))
    electro = {'usr/share/games/electro/data/music.pk3': pk3.getvalue(),
               'usr/share/doc/synth-electro/copyright': b'Electro is (c) 2005 Someone, GPL version 2 or later.\n'}
    whole = {'usr/share/whole/track1.ogg': _ogg(11, 600, 30), 'usr/share/whole/track2.ogg': _ogg(11, 660, 31),
             'usr/share/doc/synth-whole/copyright': b'Free-form: (c) 1999 Studio, BSD-like.\n'}
    specs = [
        ('synth-orchestra', orchestra, {'usr/share/synth/music/link.ogg': 'a.ogg'},
         dict(style='orchestral', music=('usr/share/synth/music/*',), holders='2001-2003 Holder A',
              licenses=('GPL-2+', 'CC-BY-SA-3.0'))),
        ('synth-electro', electro, None,
         dict(style='electronic', music=('usr/share/games/electro/data/music.pk3/sound/cdtracks/*',),
              holders='2005 Someone', licenses=('GPL-2+',))),
        ('synth-whole', whole, None,
         dict(style='electronic', music=('usr/share/whole/*',), holders='1999 Studio', licenses=('Studio-License',),
              whole=True)),
    ]
    out = {}
    for name, files, links, extra in specs:
        deb = folder / f'{name}_1.0-1_all.deb'
        _make_deb(deb, files, links)
        out[name] = rm.Package(
            name=name, version='1.0-1', sha256=common.sha256_file(deb), size=deb.stat().st_size,
            pool_path=f'pool/main/s/{name}/{deb.name}', game=name.split('-')[1].title(), short=name.split('-')[1],
            moods=('calm', 'bright'), instrument='synthesizers', keywords=('test',), hours=0.0, tracks=0, **extra)
    return out


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """The synthetic packages' .deb folder and table entries, and one build of them (dpkg-deb if installed)."""
    folder = tmp_path_factory.mktemp('debs')
    table = _synthetic(folder)
    root = tmp_path_factory.mktemp('built')
    with pytest.MonkeyPatch.context() as mp:
        for name, pkg in table.items():
            mp.setitem(rm.PACKAGES, name, pkg)
        summary = rm.build(packages=list(table), out=root, debs=folder, workers=1, verbose=False)
    return folder, table, root, summary


@pytest.fixture
def with_synthetic(synthetic, monkeypatch):
    folder, table, root, summary = synthetic
    for name, pkg in table.items():
        monkeypatch.setitem(rm.PACKAGES, name, pkg)
    return synthetic


def _manifest(root: Path, split: str):
    path = rm.manifest_dir(root=root) / split / 'data.jsonl'
    return path, [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# The pinned table and the configs.
# --------------------------------------------------------------------------------------------
def test_pinned_table_is_consistent():
    assert set(rm.DEFAULT_PACKAGES) <= set(rm.PACKAGES)
    for name, p in rm.PACKAGES.items():
        assert p.name == name
        assert re.fullmatch(r'[0-9a-f]{64}', p.sha256), name
        assert p.size > 1_000_000 and p.tracks > 0 and p.hours > 0
        assert p.pool_path.startswith('pool/main/') and p.pool_path.endswith(
            f"{p.name}_{p.version.split(':')[-1]}_all.deb")
        assert p.deb_file == f"{p.name}_{p.version.replace(':', '%3a')}_all.deb"
        assert p.licenses and all(p.licenses) and p.holders and p.game and p.style and p.moods
        assert p.music and all(g.startswith('usr/') for g in p.music)
        for glob, holders, license_ in p.rights:
            assert license_ in p.licenses and holders
    hours = sum(rm.PACKAGES[n].hours for n in rm.DEFAULT_PACKAGES)
    assert 3 <= hours <= 6, hours
    assert len({rm.PACKAGES[n].style for n in rm.DEFAULT_PACKAGES}) >= 4
    assert rm.select_packages(None) == [rm.PACKAGES[n] for n in rm.DEFAULT_PACKAGES]
    assert len(rm.select_packages(['all'])) == len(rm.PACKAGES)
    with pytest.raises(rm.RealMusicError, match='unknown package'):
        rm.select_packages(['no-such-music'])


def test_pinned_table_matches_apt_print_uris():
    """The pins are what `apt-get download --print-uris` prints (local package lists only, no download)."""
    if rm.shutil.which('apt-get') is None:
        pytest.skip('no apt-get')
    try:
        uris = debian.print_uris(list(rm.PACKAGES.values()))
    except debian.FetchError as exc:
        pytest.skip(f'the apt lists here do not hold the pinned versions: {str(exc)[:200]}')
    for p in rm.PACKAGES.values():
        url, filename, size, sha = uris[p.name]
        assert (unquote(url), filename, size, sha) == (p.url, p.deb_file, p.size, p.sha256)


def test_dset_config():
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(rm.REPO_ROOT / 'config' / 'dset' / 'audio' / 'real_music.yaml')
    assert cfg.datasource.max_sample_rate == common.SAMPLE_RATE and cfg.datasource.max_channels == 1
    for split in common.SPLITS:
        assert cfg.datasource[split] == f'egs/real_music/{split}'


# --------------------------------------------------------------------------------------------
# Splits, themes, titles, rights.
# --------------------------------------------------------------------------------------------
def _random_tracks(seed: int) -> list:
    rng = random.Random(seed)
    tracks = []
    for p, style in enumerate(['orchestral', 'electronic', 'ambient', 'electronic', 'score']):
        for i in range(rng.randint(3, 25)):
            tracks.append(dict(id=f'p{p}_t{i}', package=f'p{p}', theme=f'theme{i // rng.randint(1, 3)}',
                               style=style, duration=rng.uniform(10, 600)))
    return tracks


@pytest.mark.parametrize('seed', range(5))
def test_splits_by_whole_tracks_and_groups(seed):
    tracks = _random_tracks(seed)
    whole = {'p4'}
    a = rm.assign_splits(tracks, whole=whole)
    assert set(a) == {t['id'] for t in tracks}                       # every track in exactly one split
    assert set(a.values()) == set(common.SPLITS)                     # no split empty
    groups = {}
    for t in tracks:
        groups.setdefault((t['package'], t['theme']), set()).add(a[t['id']])
    assert all(len(s) == 1 for s in groups.values())                 # a theme group never straddles splits
    assert {a[t['id']] for t in tracks if t['package'] in whole} == {'train'}
    assert {t['style'] for t in tracks if a[t['id']] == 'train'} == {t['style'] for t in tracks}
    # deterministic: the same assignment from shuffled input
    shuffled = list(tracks)
    random.Random(seed + 100).shuffle(shuffled)
    assert rm.assign_splits(shuffled, whole=whole) == a
    # held-out shares near their targets (whole tracks: within one long track)
    total = sum(t['duration'] for t in tracks)
    for split in rm.HELD_OUT:
        got = sum(t['duration'] for t in tracks if a[t['id']] == split)
        assert got <= common.SPLIT_FRACTIONS[split] * total + 600 * 3


def test_split_does_not_depend_on_other_packages():
    """A package's held-out tracks are chosen by their own hash: adding a package moves few of them."""
    tracks = _random_tracks(0)
    a = rm.assign_splits(tracks)
    extra = [dict(id=f'x_{i}', package='x', theme=f'x{i}', style='orchestral', duration=100.0) for i in range(10)]
    b = rm.assign_splits(tracks + extra)
    same = sum(a[t['id']] == b[t['id']] for t in tracks)
    assert same >= 0.8 * len(tracks)


def test_whole_soundtrack_flag():
    tracks = [dict(id=f'{p}_{i}', package=p, theme=str(i), style='s', duration=60.0)
              for p in ('a', 'b') for i in range(8)]
    split = rm.assign_splits(tracks, whole={'a'})
    assert {split[f'a_{i}'] for i in range(8)} == {'train'}
    assert {split[f'b_{i}'] for i in range(8)} > {'valid', 'evaluate', 'generate'}
    free = rm.assign_splits(tracks)
    assert len({free[f'a_{i}'] for i in range(8)}) > 1     # without the flag its tracks spread over splits


def test_too_few_groups_is_a_clear_error():
    tracks = [dict(id=f't{i}', package='asc', theme=str(i), style='e', duration=300.0) for i in range(3)]
    with pytest.raises(rm.RealMusicError, match=r'generate would be empty.*--allow-empty-splits'):
        rm.assign_splits(tracks)
    a = rm.assign_splits(tracks, allow_empty=True)
    assert sorted(a.values()) == ['evaluate', 'train', 'valid']


def test_themes_titles_and_artists():
    pkg = rm.PACKAGES['wesnoth-1.16-music']
    assert rm.theme_of(pkg, 'x/defeat2.ogg') == rm.theme_of(pkg, 'x/traveling_minstrels.ogg')
    assert rm.theme_of(pkg, 'x/frantic-old.ogg') == rm.theme_of(pkg, 'x/frantic.ogg') == 'frantic'
    assert rm.theme_of(pkg, 'x/knolls.ogg') != rm.theme_of(pkg, 'x/knalgan_theme.ogg')
    nexuiz = rm.PACKAGES['nexuiz-music']
    assert rm.theme_of(nexuiz, 'a/sixtyfour_.ogg') == rm.theme_of(nexuiz, 'a/sixtyfour_revisited.ogg')
    wz = rm.PACKAGES['warzone2100-music']
    assert rm.theme_of(wz, 'a/track3_enhanced.opus') == rm.theme_of(wz, 'b/track3.opus') == 'track3'
    assert rm.theme_of(wz, 'a/track17.opus') != rm.theme_of(wz, 'a/track18.opus')
    ufo = rm.PACKAGES['ufoai-music']
    assert rm.theme_of(ufo, 'm/Crystan-Battlescape01.ogg') == rm.theme_of(ufo, 'm/Crystan-Geosphere02.ogg')
    assert rm.title_of(ufo, 'm/MarineAlienRaid.ogg') == 'Marine Alien Raid'
    assert rm.title_of(wz, 'a/track12.opus') == 'Track 12'
    assert rm.title_of(pkg, 'x/knalgan_theme.ogg') == 'Knalgan Theme'
    assert rm.title_of(rm.PACKAGES['hyperrogue-music'], 'm/hr-savino-caribbean.ogg') == 'Caribbean'
    assert rm.artist_of('2002 Michael Kievernagel') == 'Michael Kievernagel'
    assert rm.artist_of('1996-2008, Alcachofa Soft S.L.; Gren') == 'Alcachofa Soft S.L., Gren'


def test_rights_from_the_copyright_file():
    stanzas = debian.parse_copyright(DEP5)
    assert [s[2] for s in stanzas] == ['GPL-2+', 'CC-BY-SA-3.0', 'GPL-2+']
    assert stanzas[1][1] == ['2010, Holder B', 'Holder C']
    assert debian.parse_copyright('Nexuiz is (c) Alientrap, GPL.\n') is None
    pkg = rm.Package(name='p', version='1', sha256='0' * 64, size=1, pool_path='pool/main/p/p_1_all.deb', game='G',
                     short='p', style='s', moods=('m',), instrument='i', keywords=(), music=('*',), holders='H',
                     licenses=('GPL-2+', 'CC-BY-SA-3.0'), hours=1, tracks=1)
    assert rm.track_rights(pkg, stanzas, 'usr/share/p/music/a.ogg') == ('2001-2003 Holder A', 'GPL-2+')
    assert rm.track_rights(pkg, stanzas, 'usr/share/p/music/b.ogg') == ('2010, Holder B; Holder C', 'CC-BY-SA-3.0')
    assert rm.track_rights(pkg, None, 'x.ogg') == ('H', 'GPL-2+')
    narrow = rm.Package(**{**pkg.__dict__, 'licenses': ('GPL-2+',)})
    with pytest.raises(rm.RealMusicError, match='CC-BY-SA-3.0.*update the table'):
        rm.track_rights(narrow, stanzas, 'usr/share/p/music/b.ogg')
    # the table's overrides (warzone2100's album licenses) come last
    wz = rm.PACKAGES['warzone2100-music']
    wz_stanzas = [(['*'], ['1999-2004, Eidos Interactive'], 'GPL-2+')]
    base = 'usr/share/games/warzone2100/music/albums/aftermath_soundtrack/'
    assert rm.track_rights(wz, wz_stanzas, base + 'track17.opus')[1] == 'CC-BY-SA-3.0+ or GPL-2+'
    assert rm.track_rights(wz, wz_stanzas, base + 'track3_enhanced.opus')[1] == 'GPL-2+'
    assert rm.track_rights(wz, wz_stanzas, 'usr/share/games/warzone2100/music/menu.opus') == (
        '1999-2004, Eidos Interactive', 'GPL-2+')


# --------------------------------------------------------------------------------------------
# Error paths: a clear message, nothing left that looks built.
# --------------------------------------------------------------------------------------------
def _nothing_built(root: Path) -> None:
    assert not rm.audio_dir(root=root).exists()
    assert not rm.manifest_dir(root=root).exists()
    assert not rm.is_built(root=root)
    assert not rm._partial_dir(root, rm.NAME).exists()


def test_no_apt_get(tmp_path, monkeypatch, capsys):
    empty = tmp_path / 'bin'
    empty.mkdir()
    monkeypatch.setenv('PATH', str(empty))
    with pytest.raises(debian.FetchError) as info:
        rm.build(packages=['asc-music'], out=tmp_path, workers=1, verbose=False)
    msg = str(info.value)
    assert 'apt-get not found' in msg and '--debs DIR' in msg and 'make dataset' in msg
    assert 'sources.list' in msg and rm.PACKAGES['asc-music'].url in msg
    _nothing_built(tmp_path)
    assert rm.main(['--packages', 'asc-music', '--out', str(tmp_path)]) == 2
    assert 'apt-get not found' in capsys.readouterr().err


def test_archive_without_the_package(tmp_path, monkeypatch):
    """A package the archive does not have (the bogus one stands for an unreachable archive: apt-get fails)."""
    if rm.shutil.which('apt-get') is None:
        pytest.skip('no apt-get')
    bogus = rm.Package(**{**rm.PACKAGES['asc-music'].__dict__, 'name': 'audiocraft-mmd-no-such-package'})
    monkeypatch.setitem(rm.PACKAGES, bogus.name, bogus)
    with pytest.raises(debian.FetchError, match=r'apt-get download failed.*\n.*Fix') as info:
        rm.build(packages=[bogus.name], out=tmp_path, workers=1, verbose=False)
    assert 'make dataset' in str(info.value) and '--debs' in str(info.value)
    _nothing_built(tmp_path)
    assert not list((tmp_path / 'dataset' / '.cache' / 'debs').glob('*.deb'))


def test_debs_folder_missing_or_corrupt_file(tmp_path, with_synthetic):
    folder, table, _, _ = with_synthetic
    with pytest.raises(debian.FetchError, match=r'asc-music_1\.3-6_all\.deb is not in --debs') as info:
        rm.build(packages=['asc-music'], out=tmp_path, debs=tmp_path, verbose=False)
    assert rm.PACKAGES['asc-music'].url in str(info.value)
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / table['synth-whole'].deb_file).write_bytes(b'not a deb')
    with pytest.raises(debian.FetchError, match='sha256 differs'):
        rm.build(packages=['synth-whole'], out=tmp_path, debs=bad, verbose=False)
    _nothing_built(tmp_path)


def test_too_few_tracks_leaves_nothing_built(tmp_path, with_synthetic):
    folder, _, _, _ = with_synthetic
    with pytest.raises(rm.RealMusicError, match='would be empty'):
        rm.build(packages=['synth-whole'], out=tmp_path, debs=folder, workers=1, verbose=False)
    assert not rm.audio_dir(root=tmp_path).exists() and not rm.manifest_dir(root=tmp_path).exists()
    assert not rm.is_built(root=tmp_path)


# --------------------------------------------------------------------------------------------
# The synthetic build.
# --------------------------------------------------------------------------------------------
def test_synthetic_build_splits_and_skips(synthetic):
    folder, table, root, summary = synthetic
    assert summary['skipped_counts'] == dict(not_music=1, duplicate=2, short=1, silent=1, failed=0)
    assert summary['total_tracks'] == 5 + 4 + 2
    ids = {}
    for split in common.SPLITS:
        _, entries = _manifest(root, split)
        assert entries, f'split {split} is empty'
        for e in entries:
            assert Path(e['path']).parent == rm.audio_dir(root=root) / split
            assert Path(e['path']).stem not in ids, 'a track in two splits'
            ids[Path(e['path']).stem] = split
    assert len(ids) == summary['total_tracks']
    assert ids['whole_track1'] == ids['whole_track2'] == 'train'            # whole soundtrack
    assert ids['orchestra_c'] == ids['orchestra_c_revisited']             # one theme
    assert set(ids) >= {'electro_alpha', 'orchestra_a'} and 'orchestra_copy_of_a' not in ids
    assert rm.is_built(root=root) and rm.verify(root=root) == []


def test_synthetic_audio_and_sidecars(synthetic):
    _, _, root, _ = synthetic
    for split in common.SPLITS:
        _, entries = _manifest(root, split)
        for e in entries:
            path = Path(e['path'])
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (32000, 1, 'PCM_16')
            assert abs(info.frames / 32000 - e['duration']) < 1e-6 and e['duration'] >= rm.MIN_SECONDS
            wav, _ = sf.read(str(path), dtype='float32')
            lufs = common.integrated_loudness(wav, 32000)
            peak_db = 20 * np.log10(np.abs(wav).max())
            assert abs(lufs - common.TARGET_LUFS) < 0.1 or (lufs < common.TARGET_LUFS and peak_db > -1.1)
            assert abs(float(np.abs(wav).max()) - e['amplitude']) < 1e-4
            side = json.loads(path.with_suffix('.json').read_text())
            assert all(f in side for f in MUSIC_FIELDS)
            assert side['name'] == path.stem and side['split'] == split and side['title']
            assert side['genre'] == side['style'] and side['moods'] and side['license'] and side['copyright']
            assert side['source_sample_rate'] == SR_SOURCE and side['source_channels'] == 2
    side = json.loads((rm.audio_dir(root=root) / next(
        s for s in common.SPLITS if (rm.audio_dir(root=root) / s / 'orchestra_b.json').exists()) / 'orchestra_b.json')
        .read_text())
    assert side['license'] == 'CC-BY-SA-3.0' and side['artist'] == 'Holder B, Holder C'
    assert side['title'] == 'B' and side['game'] == 'Orchestra' and side['package'] == 'synth-orchestra'


def test_synthetic_attribution_and_record(synthetic):
    folder, table, root, summary = synthetic
    adir = rm.audio_dir(root=root)
    text = (adir / rm.ATTRIBUTION).read_text()
    for pkg in table.values():
        assert f'== {pkg.name} 1.0-1' in text and pkg.sha256 in text
        assert (adir / 'licenses' / f'{pkg.name}.copyright').is_file()
    assert 'usr/share/synth/music/b.ogg  |  2010, Holder B; Holder C  |  CC-BY-SA-3.0' in text
    assert 'music.pk3/sound/cdtracks/alpha.ogg  |  2005 Someone  |  GPL-2+' in text
    record = rm.read_record(root=root)
    assert record['builder_version'] == rm.BUILDER_VERSION and record['empty_splits'] == []
    assert [p['sha256'] for p in record['packages']] == [p.sha256 for p in table.values()]
    wavs = [k for k in record['files'] if k.endswith('.wav')]
    assert len(wavs) == summary['total_tracks']
    assert {f'egs/real_music/{s}/data.jsonl' for s in common.SPLITS} <= set(record['files'])
    assert record['summary']['skipped']['short'][0]['path'].endswith('short.ogg')
    # the command that builds it again, for `check` to name (the checker imports no builder)
    assert record['rebuild'] == ('python -m audiocraft_mmd.data.real_music --packages synth-orchestra synth-electro '
                                 f'synth-whole --out {root} --debs {folder.resolve()}')
    pkgs = rm.select_packages(None)
    assert rm.rebuild_command(pkgs, common.REPO_ROOT, rm.NAME, rm.MIN_SECONDS, False) == \
        'python -m audiocraft_mmd.data.real_music'
    assert rm.rebuild_command(pkgs, root, 'real_small', 5., True, cache=root / 'debs') == (
        f'python -m audiocraft_mmd.data.real_music --out {root} --name real_small --min-seconds 5 '
        f'--allow-empty-splits --cache {root / "debs"}')


def test_paths_take_the_name_first(tmp_path):
    """(name, root), as every builder's: a folder given as the name is refused, not read as another dataset."""
    expected = tmp_path / 'egs' / 'real_music'
    assert rm.manifest_dir(root=tmp_path) == common.manifest_dir('real_music', tmp_path) == expected
    assert rm.audio_dir('other', tmp_path) == tmp_path / 'dataset' / 'other'
    for wrong in (tmp_path, str(tmp_path)):
        with pytest.raises(TypeError, match='root='):
            rm.manifest_dir(wrong)


def test_manifests_load_in_audiocraft(synthetic):
    audio_dataset = pytest.importorskip('audiocraft.data.audio_dataset')
    music_dataset = pytest.importorskip('audiocraft.data.music_dataset')
    _, _, root, _ = synthetic
    for split in common.SPLITS:
        path, entries = _manifest(root, split)
        metas = audio_dataset.load_audio_meta(path)
        assert [json.dumps(m.to_dict()) for m in metas] == path.read_text().splitlines()
    ds = audio_dataset.AudioDataset.from_meta(str(rm.manifest_dir(root=root) / 'train'), segment_duration=2.0,
                                              sample_rate=32000, channels=1, num_samples=3, shuffle=False)
    assert tuple(ds[0].shape) == (1, 64000)
    mds = music_dataset.MusicDataset.from_meta(str(rm.manifest_dir(root=root) / 'valid'), segment_duration=2.0,
                                               sample_rate=32000, channels=1, num_samples=2, shuffle=False,
                                               info_fields_required=True, return_info=True)
    wav, info = mds[0]
    assert tuple(wav.shape) == (1, 64000)
    assert info.description and info.genre and info.moods and info.key is None and info.bpm is None
    assert info.to_condition_attributes().text['description'] == info.description


def test_rerun_skips_then_force_and_tamper_rebuild(tmp_path, with_synthetic):
    folder, table, built_root, _ = with_synthetic
    names = list(table)
    first = rm.build(packages=names, out=tmp_path, debs=folder, workers=1, verbose=False)
    record = rm.read_record(root=tmp_path)
    t0 = time.time()
    again = rm.build(packages=names, out=tmp_path, debs=folder, workers=1, verbose=False)
    assert again['already_built'] is True and time.time() - t0 < 5
    # the same inputs give the same audio, sidecars and attribution whatever the root
    ours = {k.split('/', 1)[1]: v for k, v in record['files'].items() if k.startswith('dataset/')}
    theirs = {k.split('/', 1)[1]: v for k, v in rm.read_record(root=built_root)['files'].items()
              if k.startswith('dataset/')}
    assert ours == theirs
    # a damaged file is found and the build redone
    wav = Path(next(p for p in _manifest(tmp_path, 'train')[1])['path'])
    wav.write_bytes(wav.read_bytes()[:1000])
    assert rm.main(['--check', '--out', str(tmp_path)]) == 1
    from audiocraft_mmd.data import check
    _, [bad] = check.check_manifests([rm.manifest_dir(root=tmp_path)])
    assert bad.path == str(wav) and bad.fix == f"rebuild the dataset: `{record['rebuild']}`"
    assert f'--out {tmp_path} --debs {folder.resolve()}' in bad.fix
    fixed = rm.build(packages=names, out=tmp_path, debs=folder, workers=1, verbose=False)
    assert fixed['already_built'] is False and rm.verify(root=tmp_path) == []
    assert rm.read_record(root=tmp_path)['files'] == record['files']
    assert rm.main(['--check', '--out', str(tmp_path)]) == 0
    forced = rm.build(packages=names, out=tmp_path, debs=folder, workers=1, force=True, verbose=False)
    assert forced['already_built'] is False and forced['splits'] == first['splits']
    assert not rm._partial_dir(tmp_path, rm.NAME).exists()


def test_interrupted_build_resumes_decoded_tracks(tmp_path, with_synthetic, monkeypatch):
    folder, table, _, _ = with_synthetic
    names = list(table)
    calls = []
    real_worker = rm._decode_worker

    def crash_after_three(task):
        if len(calls) == 3:
            raise KeyboardInterrupt('simulated interruption')
        calls.append(task['id'])
        return real_worker(task)
    monkeypatch.setattr(rm, '_decode_worker', crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        rm.build(packages=names, out=tmp_path, debs=folder, workers=1, verbose=False)
    assert not rm.is_built(root=tmp_path) and not rm.manifest_dir(root=tmp_path).exists()
    calls.clear()
    monkeypatch.setattr(rm, '_decode_worker', lambda task: (calls.append(task['id']), real_worker(task))[1])
    summary = rm.build(packages=names, out=tmp_path, debs=folder, workers=1, verbose=False)
    decoded_again = set(calls)
    assert summary['total_tracks'] == 11 and rm.verify(root=tmp_path) == []
    assert len(decoded_again) == 11 + 2 - 3     # 13 music files (2 skipped: short, silent), 3 reused


def test_python_extractor_matches_dpkg_deb(tmp_path, with_synthetic, monkeypatch):
    folder, table, built_root, _ = with_synthetic
    real_which = rm.shutil.which
    monkeypatch.setattr(rm.shutil, 'which', lambda cmd, *a, **k: None if cmd == 'dpkg-deb' else real_which(cmd))
    deb = folder / table['synth-orchestra'].deb_file
    assert debian.extract_deb(deb, tmp_path / 'x') == 'python'
    assert (tmp_path / 'x' / 'usr/share/synth/music/link.ogg').is_symlink()
    assert (tmp_path / 'x' / 'usr/share/doc/synth-orchestra/copyright').read_text() == DEP5
    rm.build(packages=list(table), out=tmp_path, debs=folder, workers=1, verbose=False)
    record = rm.read_record(root=tmp_path)
    assert record['tools']['extractor'] == 'python'
    strip = (lambda files: {k: v for k, v in files.items() if k.startswith('dataset/')})
    assert strip(record['files']) == strip(rm.read_record(root=built_root)['files'])


def test_tar_extraction_without_filters(tmp_path):
    """On a Python without tarfile's extraction filters the same rule holds: files, folders and links inside."""
    class NoFilters(tarfile.TarFile):
        def extractall(self, path='.', members=None, *, numeric_owner=False, **kwargs):
            if 'filter' in kwargs:
                raise TypeError('no filter argument')
            return super().extractall(path, members, numeric_owner=numeric_owner, filter='fully_trusted')

    def tar_of(*members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w') as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data else None)
        buf.seek(0)
        return NoFilters(fileobj=buf)
    f = tarfile.TarInfo('./a/b.txt')
    f.size = 5
    link = tarfile.TarInfo('./a/link')
    link.type, link.linkname = tarfile.SYMTYPE, 'b.txt'
    with tar_of((f, b'hello'), (link, None)) as tar:
        debian._extract_tar(tar, tmp_path / 'ok')
    assert (tmp_path / 'ok' / 'a' / 'link').read_text() == 'hello'
    evil = tarfile.TarInfo('./evil')
    evil.type, evil.linkname = tarfile.SYMTYPE, '/etc/passwd'
    with tar_of((evil, None)) as tar, pytest.raises(debian.DebianError, match='refusing'):
        debian._extract_tar(tar, tmp_path / 'bad')


def test_pyav_fallback_decodes_what_libsndfile_cannot(monkeypatch):
    data = _ogg(2, 440, 0)
    ref, sr, decoder, _ = rm.decode_audio(data)
    assert decoder == 'libsndfile' and sr == SR_SOURCE and ref.shape[1] == 2

    def refuse(*args, **kwargs):
        raise sf.LibsndfileError(0, 'refused')
    monkeypatch.setattr(sf, 'SoundFile', refuse)
    wav, sr2, decoder2, fmt = rm.decode_audio(data)
    assert decoder2 == 'pyav' and sr2 == SR_SOURCE and wav.shape[1] == 2 and 'vorbis' in fmt
    n = min(len(wav), len(ref))
    assert abs(len(wav) - len(ref)) < 2048 and np.abs(wav[:n] - ref[:n]).max() < 1e-3
    mono = rm.to_mono_32k(wav, sr2)
    assert abs(len(mono) - len(wav) * 32000 / SR_SOURCE) <= 1


def test_doctor_reports_the_real_preset(tmp_path, synthetic, monkeypatch):
    from audiocraft_mmd import doctor
    assert 'not built' in doctor.check_real_dataset(tmp_path) and 'make dataset-real' in doctor.check_real_dataset(
        tmp_path)
    _, _, root, _ = synthetic
    assert '11 files open' in doctor.check_real_dataset(root)


# --------------------------------------------------------------------------------------------
# End to end on the archive.
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_asc_music_from_the_archive(tmp_path):
    """apt-get download of the smallest pinned package (10 MB) and a build of its 3 tracks."""
    if rm.shutil.which('apt-get') is None:
        pytest.skip('no apt-get')
    pkg = rm.PACKAGES['asc-music']
    t0 = time.time()
    summary = rm.build(packages=[pkg.name], out=tmp_path, allow_empty_splits=True, workers=1, verbose=False)
    assert (tmp_path / 'dataset' / '.cache' / 'debs' / pkg.deb_file).is_file()
    assert summary['total_tracks'] == pkg.tracks == 3
    assert abs(summary['total_hours'] - pkg.hours) < 0.005
    assert sorted(s for s in common.SPLITS if summary['splits'][s]['tracks']) == ['evaluate', 'train', 'valid']
    assert all(summary['splits'][s]['tracks'] <= 1 for s in common.SPLITS)   # whole tracks, one per split
    record = rm.read_record(root=tmp_path)
    assert record['packages'][0]['sha256'] == pkg.sha256 and record['empty_splits'] == ['generate']
    text = (rm.audio_dir(root=tmp_path) / rm.ATTRIBUTION).read_text()
    assert text.count('|  2002 Michael Kievernagel  |  GPL-2+') == 3
    assert rm.main(['--check', '--out', str(tmp_path), '--full']) == 0
    for split in ('train', 'valid', 'evaluate'):
        for e in _manifest(tmp_path, split)[1]:
            side = json.loads(Path(e['path']).with_suffix('.json').read_text())
            assert side['source_format'] == 'MP3/MPEG_LAYER_III' and side['source_sample_rate'] == 22050
    t1 = time.time()
    assert rm.build(packages=[pkg.name], out=tmp_path, allow_empty_splits=True, verbose=False)['already_built']
    assert time.time() - t1 < 5
    print(f'asc-music: fetched and built in {t1 - t0:.1f} s')
