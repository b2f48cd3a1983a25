"""Real recordings, offline: free game soundtracks from Debian's archive as an AudioCraft/MusicGen dataset.

The embedded preset (`embedded_music`) is General-MIDI renderings of classical scores; a tokenizer trained on it
does not transfer to produced music (mixed instruments, drums, synths, reverb). Debian's `main` archive, which every
machine here reaches through `apt-get`, holds hours of DFSG-free game soundtracks in several styles. This builder:

* fetches a PINNED list of those packages (name, exact version, sha256 as `apt-get download --print-uris` prints
  them) with `apt-get download` (no root) into a cache, or takes them from a folder (`--debs DIR`), and checks each
  sha256;
* extracts them (`dpkg-deb -x`, or Python's ar/tar reader where dpkg-deb is absent), keeps the music files
  (sound effects, duplicates and clips under 10 s are skipped and counted), decodes each track whole (libsndfile,
  else PyAV/FFmpeg), downmixes to mono, resamples to 32 kHz and normalizes the loudness exactly as the embedded
  preset does (`common.loudness_normalize`: -18 LUFS, -1 dBFS peak ceiling);
* splits by track, never within a track, deterministically (hash of package and theme group), keeping tracks that
  share material together and a `whole` soundtrack in one split, with every style in train;
* writes 16-bit WAV files with MusicGen `.json` sidecars, AudioCraft manifests, an ATTRIBUTION file with the
  package's copyright file next to the audio, and a build record with every checksum, written last.

Usage::

    python -m audiocraft_mmd.data.real_music                       # default set, about 5 h of audio
    python -m audiocraft_mmd.data.real_music --packages asc-music  # one package (add --allow-empty-splits)
    python -m audiocraft_mmd.data.real_music --list                # the pinned packages
    python -m audiocraft_mmd.data.real_music --check               # verify a build (checksums, headers)

See ``docs/real_music.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import io
import json
import multiprocessing
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tarfile
import time
import typing as tp
import zipfile

import numpy as np

from .common import (PEAK_CEILING_DB, SAMPLE_RATE, SPLIT_FRACTIONS, SPLITS, TARGET_LUFS, loudness_normalize,
                     manifest_entry, sha256_file, stable_hash, write_manifest, write_sidecar, write_text_atomic,
                     write_wav_pcm16)
from .embedded_music import REPO_ROOT

BUILDER_VERSION = 1
NAME = 'real_music'
MIN_SECONDS = 10.0             # shorter audio files are jingles / stingers / sound effects, not tracks
AUDIO_EXTS = ('.ogg', '.oga', '.opus', '.mp3', '.flac', '.wav')
ARCHIVE_EXTS = ('.pk3', '.zip')  # Quake-engine games ship their music in zip files
RECORD = 'build_record.json'
ATTRIBUTION = 'ATTRIBUTION'
DEBIAN_MIRROR = 'http://deb.debian.org/debian'
HELD_OUT = ('evaluate', 'valid', 'generate')   # the order in which held-out splits get their first group


@dataclasses.dataclass(frozen=True)
class Package:
    """One pinned Debian package and what the builder says about its tracks.

    The archive fields come from `apt-get download --print-uris NAME=VERSION` / `apt-cache show` (Debian 12);
    holders and licenses from the package's `usr/share/doc/NAME/copyright`; hours and tracks were measured on the
    built data. Style, moods and instrument describe the whole soundtrack (the game's genre and a measured
    percussive share), not each track.
    """
    name: str
    version: str
    sha256: str
    size: int
    pool_path: str                      # the file's path in the archive ("Filename:" of apt-cache show)
    game: str
    short: str                          # prefix of the track ids (file names)
    style: str                          # MusicInfo.genre
    moods: tp.Tuple[str, ...]
    instrument: str
    keywords: tp.Tuple[str, ...]
    music: tp.Tuple[str, ...]           # globs of the music files (paths in the package; zip members below it)
    holders: str                        # package-level copyright holders, as the copyright file states them
    licenses: tp.Tuple[str, ...]        # every license a track may carry (the first: the non-DEP-5 default)
    hours: float                        # measured: music kept by the builder
    tracks: int
    whole: bool = False                 # tracks share themes: the whole soundtrack stays in one split (train)
    same_theme: tp.Tuple[tp.Tuple[str, ...], ...] = ()   # lower-case stems sharing material: one split
    theme_pattern: tp.Optional[str] = None   # regex on the lower-case stem; group(1) is the theme key
    rights: tp.Tuple[tp.Tuple[str, str, str], ...] = ()  # (glob, holders, license): not in the copyright file
    title_strip: tp.Optional[str] = None     # regex removed from the stem before it becomes the title
    note: str = ''

    @property
    def deb_file(self) -> str:
        """The file name `apt-get download` writes (an epoch's ':' is URL-escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_all.deb"

    @property
    def url(self) -> str:
        return f'{DEBIAN_MIRROR}/{self.pool_path}'


PACKAGES: tp.Dict[str, Package] = {p.name: p for p in [
    Package(
        name='wesnoth-1.16-music', version='1:1.16.9-1',
        sha256='f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb', size=153244368,
        pool_path='pool/main/w/wesnoth-1.16/wesnoth-1.16-music_1.16.9-1_all.deb',
        game='The Battle for Wesnoth', short='wesnoth', style='orchestral', moods=('epic', 'heroic', 'solemn'),
        instrument='orchestra', keywords=('fantasy', 'symphonic', 'game soundtrack'),
        music=('usr/share/games/wesnoth/1.16/data/core/music/*',),
        holders='2003-2009 David White and the Battle for Wesnoth contributors', licenses=('GPL-2+',),
        hours=2.131, tracks=38,
        # defeat2 (a 14 s stinger) plays a passage of traveling_minstrels (measured: shared audio); name variants.
        same_theme=(('defeat', 'defeat2', 'traveling_minstrels'), ('victory', 'victory2'),
                    ('frantic', 'frantic-old')),
        note='silence.ogg (10 s of digital silence) is skipped as silent'),
    Package(
        name='nexuiz-music', version='2.5.2-12',
        sha256='d1a7d6e2c0a5bbe6670dbf73354e38f742597310d425e373250fc71a636f8dda', size=84012080,
        pool_path='pool/main/n/nexuiz-data/nexuiz-music_2.5.2-12_all.deb',
        game='Nexuiz', short='nexuiz', style='electronic', moods=('energetic', 'dark', 'driving'),
        instrument='synthesizers and drum machines', keywords=('techno', 'industrial', 'game soundtrack'),
        music=('usr/share/games/nexuiz/data/music.pk3/sound/cdtracks/*',),
        holders='2002-2009 Alientrap, Lee Vermeulen', licenses=('GPL-2+',), hours=1.401, tracks=18),
    Package(
        name='hyperrogue-music', version='12.0q-1',
        sha256='61ab9f4c2169442d85f42c42d26e80c1a18b93c741f3d44f1b9d83015904e7f7', size=63836788,
        pool_path='pool/main/h/hyperrogue/hyperrogue-music_12.0q-1_all.deb',
        game='HyperRogue', short='hyperrogue', style='ambient', moods=('mysterious', 'calm'),
        instrument='synthesizers', keywords=('atmospheric', 'game soundtrack'),
        music=('usr/share/hyperrogue/music/*',),
        holders='Shawn Parrotte; Lincoln Domina; Will Savino', licenses=('CC-BY-SA-3.0',), hours=0.389,
        tracks=17, title_strip=r'^hr3?-(?:savino-|domina-)?',
        note='usr/share/hyperrogue/sounds/ (84 sound effects) is not music'),
    Package(
        name='drascula-music', version='1.0+ds4-2',
        sha256='340e0beb1bacf005cbabebc07ebdd88adf6aee363d437f8a7d73cb0c77a93e79', size=36429732,
        pool_path='pool/main/d/drascula/drascula-music_1.0+ds4-2_all.deb',
        game='Drascula: The Vampire Strikes Back', short='drascula', style='adventure game score',
        moods=('spooky', 'comic'), instrument='synthesizers', keywords=('point and click', 'game soundtrack'),
        music=('usr/share/scummvm/drascula/audio/*',),
        holders='1996-2008 Alcachofa Soft S.L.', licenses=('Drascula-License',), hours=0.776, tracks=29,
        # One game's score by one studio; track30 replays track1 (measured: shared audio).
        whole=True,
        note='the de/en/es/fr/it folders are links to the same 31 files; 2 tracks are under 10 s'),
    Package(
        name='asc-music', version='1.3-6',
        sha256='369f2d396adb8db9003ef73b797d529e284a7764a5ff4b59a50a4c8b9294da5f', size=10317876,
        pool_path='pool/main/a/asc-music/asc-music_1.3-6_all.deb',
        game='Advanced Strategic Command', short='asc', style='electronic', moods=('driving', 'martial'),
        instrument='synthesizers and drums', keywords=('strategy', 'game soundtrack'),
        music=('usr/share/games/asc/music/*',),
        holders='2002 Michael Kievernagel', licenses=('GPL-2+',), hours=0.293, tracks=3,
        note='3 tracks (MP3, 22.05 kHz): alone it cannot fill 4 splits (--allow-empty-splits)'),
    Package(
        name='ufoai-music', version='2.5-2',
        sha256='2465d55e9dce75a3a2a1ad1c8ca67da84e251c04e0965d63a8562b2d9f76f9e6', size=210239176,
        pool_path='pool/main/u/ufoai-music/ufoai-music_2.5-2_all.deb',
        game='UFO: Alien Invasion', short='ufoai', style='cinematic', moods=('tense', 'dark'),
        instrument='orchestra and synthesizers', keywords=('science fiction', 'game soundtrack'),
        music=('usr/share/games/ufoai/base/0music.pk3/music/*',),
        holders='2002-2014 The UFO:AI Team and the composers the copyright file lists per file',
        licenses=('GPL-2+', 'CC-BY-3.0', 'CC-BY-SA-3.0', 'GPL-2', 'public-domain'), hours=4.007, tracks=64,
        # Each composer's numbered series (Battlescape01..06, PsymongN1..5, ...) is kept together.
        theme_pattern=r'^(crystan|david|marine|psymong|van)[-_]?'),
    Package(
        name='warzone2100-music', version='4.3.3-3',
        sha256='d3b2c9f90ea5438d45d4aff18339a03ec808e1affa9dac91f7dad61cb15ee64e', size=85730052,
        pool_path='pool/main/w/warzone2100/warzone2100-music_4.3.3-3_all.deb',
        game='Warzone 2100', short='warzone2100', style='electronic', moods=('tense', 'brooding'),
        instrument='synthesizers', keywords=('ambient techno', 'game soundtrack'),
        music=('usr/share/games/warzone2100/music/*',),
        holders='1999-2004 Eidos Interactive, 2005-2013 Warzone 2100 Project; 2019-2022 LupusMechanicus',
        licenses=('GPL-2+', 'CC-BY-SA-3.0+ or GPL-2+'), hours=4.053, tracks=30,
        # The albums' own license.txt (not Debian's copyright file) names their composer and dual license.
        rights=(
            ('*/albums/original_soundtrack/*',
             '1999-2004 Eidos Interactive, 2005-2013 Warzone 2100 Project (music: Martin Severn)', 'GPL-2+'),
            ('*/albums/legacy_soundtrack/*', '2019-2022 LupusMechanicus', 'CC-BY-SA-3.0+ or GPL-2+'),
            ('*/albums/aftermath_soundtrack/*', '2021-2022 LupusMechanicus', 'CC-BY-SA-3.0+ or GPL-2+'),
            ('*/albums/aftermath_soundtrack/track3_enhanced.opus',
             "LupusMechanicus, derived from Martin Severn's Track 3", 'GPL-2+'),
        ),
        note='tracks of 5-14 min'),
    Package(
        name='planetblupi-music-ogg', version='1.14.2-3',
        sha256='7d89a6d00b43cdb601e35256ab1a62814d203b5922cfed6a0e73e98486e82fa6', size=60112692,
        pool_path='pool/main/p/planetblupi/planetblupi-music-ogg_1.14.2-3_all.deb',
        game='Planet Blupi', short='planetblupi', style='light instrumental', moods=('cheerful', 'playful'),
        instrument='synthesizers', keywords=('family game', 'game soundtrack'),
        music=('usr/share/planetblupi/music/*',),
        holders='2017-2018 Mathieu Schroeter; 1997 Daniel Roux, EPSITEC SA & Denis Dumoulin',
        licenses=('GPL-3+',), hours=2.715, tracks=10,
        note='each file loops one piece for 10-29 min (music000: a 152 s loop played 11 times)'),
]}
DEFAULT_PACKAGES = ('wesnoth-1.16-music', 'nexuiz-music', 'hyperrogue-music', 'drascula-music', 'asc-music')


class RealMusicError(RuntimeError):
    """A build that cannot go on; the message says why and how to fix it."""


class FetchError(RealMusicError):
    """The .deb files could not be fetched or did not match their pinned sha256."""


# --------------------------------------------------------------------------------------------
# Paths and status.
# --------------------------------------------------------------------------------------------
def _root(out: tp.Optional[tp.Union[str, Path]]) -> Path:
    return Path(out).resolve() if out is not None else REPO_ROOT


def manifest_dir(root: tp.Optional[tp.Union[str, Path]] = None, name: str = NAME) -> Path:
    """Folder holding `<split>/data.jsonl` and the build record (`<root>/egs/<name>`)."""
    return _root(root) / 'egs' / name


def audio_dir(root: tp.Optional[tp.Union[str, Path]] = None, name: str = NAME) -> Path:
    """Folder holding `<split>/<track>.wav|.json`, ATTRIBUTION and licenses/ (`<root>/dataset/<name>`)."""
    return _root(root) / 'dataset' / name


def default_cache(root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    return _root(root) / 'dataset' / '.cache' / 'debs'


def _partial_dir(root: Path, name: str) -> Path:
    return root / 'dataset' / f'.{name}.partial'


def read_record(root: tp.Optional[tp.Union[str, Path]] = None, name: str = NAME) -> tp.Optional[dict]:
    """The build record, or None if there is no complete build."""
    try:
        return json.loads((manifest_dir(root, name) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def is_built(root: tp.Optional[tp.Union[str, Path]] = None, name: str = NAME) -> bool:
    """Cheap check (no checksums): a record of this builder version, the 4 manifests, every listed file present
    and no split empty unless the build allowed it. `verify` checks the checksums."""
    record = read_record(root, name)
    if record is None or record.get('builder_version') != BUILDER_VERSION:
        return False
    allowed_empty = set(record.get('empty_splits', []))
    for split in SPLITS:
        manifest = manifest_dir(root, name) / split / 'data.jsonl'
        try:
            lines = [ln for ln in manifest.read_text().splitlines() if ln.strip()]
            if not lines and split not in allowed_empty:
                return False
            if not all(Path(json.loads(ln)['path']).exists() for ln in lines):
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def missing_message(name: str = NAME) -> str:
    return (f"real-music dataset '{name}' not built: run `make dataset-real` "
            "(python -m audiocraft_mmd.data.real_music; fetches Debian packages with apt-get)")


def verify(root: tp.Optional[tp.Union[str, Path]] = None, name: str = NAME) -> tp.List[str]:
    """Recompute the checksum of every file the build record lists. Returns the problems (empty: verified)."""
    root = _root(root)
    record = read_record(root, name)
    if record is None:
        return [f'no build record at {manifest_dir(root, name) / RECORD}']
    if record.get('builder_version') != BUILDER_VERSION:
        return [f"built by builder version {record.get('builder_version')}, this is version {BUILDER_VERSION}"]
    problems = []
    for rel, digest in sorted(record.get('files', {}).items()):
        path = root / rel
        if not path.is_file():
            problems.append(f'{rel}: missing')
        elif sha256_file(path) != digest:
            problems.append(f'{rel}: checksum differs from the build record')
    return problems


# --------------------------------------------------------------------------------------------
# Fetching and extracting the .deb files.
# --------------------------------------------------------------------------------------------
def select_packages(names: tp.Optional[tp.Sequence[str]] = None) -> tp.List[Package]:
    """Pinned packages by name (None: the default set; 'all': every pinned package), in the given order."""
    if names is None:
        names = DEFAULT_PACKAGES
    if list(names) == ['all']:
        names = list(PACKAGES)
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise RealMusicError(f"unknown package(s) {', '.join(unknown)}: the pinned ones are "
                             f"{', '.join(PACKAGES)} (see --list)")
    return [PACKAGES[n] for n in dict.fromkeys(names)]


def _fix_text(packages: tp.Sequence[Package]) -> str:
    listing = '\n'.join(f'    {p.name}={p.version}  {p.url}  sha256 {p.sha256}' for p in packages)
    return (
        'Fix, one of:\n'
        '  - give apt-get the Debian archive: check the network and the apt sources (/etc/apt/sources.list or '
        '/etc/apt/sources.list.d/: a `deb http://deb.debian.org/debian bookworm main` line; `apt-get update` as '
        'root refreshes the package lists);\n'
        '  - or fetch the .deb files on another machine (`apt-get download NAME=VERSION`, or the URLs below) and '
        'pass their folder: `python -m audiocraft_mmd.data.real_music --debs DIR`;\n'
        '  - or work offline with the embedded preset (rendered scores, no download): `make dataset` '
        '(python -m audiocraft_mmd.data.embedded_music), dset=audio/embedded_music.\n'
        f'Pinned packages:\n{listing}')


def print_uris(packages: tp.Sequence[Package]) -> tp.Dict[str, tp.Tuple[str, str, int, str]]:
    """What `apt-get download --print-uris NAME=VERSION` says: name -> (url, file name, size, sha256).
    Reads the local package lists only (no download). Raises FetchError if apt-get cannot resolve them."""
    apt = shutil.which('apt-get')
    if apt is None:
        raise FetchError('apt-get not found on PATH.\n' + _fix_text(packages))
    proc = subprocess.run([apt, 'download', '--print-uris'] + [f'{p.name}={p.version}' for p in packages],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise FetchError(f'apt-get download --print-uris failed: {_tail(proc.stderr)}\n' + _fix_text(packages))
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"'([^']+)' (\S+) (\d+) SHA256:([0-9a-f]{64})", line.strip())
        if m:
            name = m.group(2).split('_', 1)[0]
            out[name] = (m.group(1), m.group(2), int(m.group(3)), m.group(4))
    return out


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith('W: Download is performed')]
    return ' | '.join(lines[-n:]) or '(no message)'


def _check_sha(path: Path, pkg: Package) -> bool:
    return path.is_file() and path.stat().st_size == pkg.size and sha256_file(path) == pkg.sha256


def _find_in_dir(folder: Path, pkg: Package) -> tp.Optional[Path]:
    """A pre-downloaded .deb of `pkg` in `folder`: by apt's or the pool's file name, else by sha256."""
    names = [pkg.deb_file, Path(pkg.pool_path).name]
    for n in names:
        if (folder / n).is_file():
            return folder / n
    for cand in sorted(folder.glob(f'{pkg.name}_*.deb')):
        if _check_sha(cand, pkg):
            return cand
    return None


def fetch_debs(packages: tp.Sequence[Package], cache: tp.Union[str, Path],
               debs: tp.Optional[tp.Union[str, Path]] = None, verbose: bool = True) -> tp.Dict[str, Path]:
    """The verified .deb file of every package: from `debs` (a folder of pre-downloaded files) if given, else from
    `cache`, where the missing ones are fetched with `apt-get download NAME=VERSION` (no root needed).

    Returns:
        package name -> path of its .deb, whose sha256 matches the pinned one.
    Raises:
        FetchError: apt-get missing or failing, a file missing from `debs`, or a checksum mismatch; the message
            names the fixes (network / apt sources, `--debs DIR`, the offline embedded preset).
    """
    out: tp.Dict[str, Path] = {}
    if debs is not None:
        folder = Path(debs)
        for pkg in packages:
            path = _find_in_dir(folder, pkg)
            if path is None:
                raise FetchError(f'{pkg.deb_file} is not in --debs {folder}.\n' + _fix_text([pkg]))
            if not _check_sha(path, pkg):
                raise FetchError(f'{path}: size or sha256 differs from the pinned {pkg.name}={pkg.version} '
                                 f'(sha256 {pkg.sha256}); the file is corrupt or another version.\n'
                                 + _fix_text([pkg]))
            out[pkg.name] = path
        return out
    cache = Path(cache)
    need = []
    for pkg in packages:
        path = cache / pkg.deb_file
        if _check_sha(path, pkg):
            out[pkg.name] = path
        else:
            need.append(pkg)
    if not need:
        return out
    apt = shutil.which('apt-get')
    if apt is None:
        raise FetchError('apt-get not found on PATH (the real-music preset fetches Debian packages with it).\n'
                         + _fix_text(need))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f'.download-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if verbose:
            mb = sum(p.size for p in need) / 1e6
            print(f"[real_music] apt-get download {' '.join(p.name for p in need)} ({mb:.0f} MB) -> {cache}",
                  flush=True)
        try:
            proc = subprocess.run([apt, 'download'] + [f'{p.name}={p.version}' for p in need], cwd=tmp,
                                  capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f'apt-get download failed: {exc}\n' + _fix_text(need)) from exc
        if proc.returncode != 0:
            raise FetchError(f'apt-get download failed (exit code {proc.returncode}): {_tail(proc.stderr)}\n'
                             + _fix_text(need))
        for pkg in need:
            got = tmp / pkg.deb_file
            if not got.is_file():
                raise FetchError(f'apt-get download wrote no {pkg.deb_file}: {_tail(proc.stderr)}\n'
                                 + _fix_text([pkg]))
            if not _check_sha(got, pkg):
                raise FetchError(f'{pkg.deb_file} from the archive has another sha256 than the pinned '
                                 f'{pkg.sha256}: the archive changed, the pin is out of date.\n' + _fix_text([pkg]))
            os.replace(got, cache / pkg.deb_file)   # only verified files enter the cache
            out[pkg.name] = cache / pkg.deb_file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files, folders and links that stay inside `dest` (tarfile's 'data' filter where this Python has
    it: 3.10.12+, 3.11.4+; else the same check by hand)."""
    try:
        tar.extractall(dest, filter='data')
        return
    except TypeError:   # a Python without extraction filters
        pass
    root = dest.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() else target
        if not (member.isfile() or member.isdir() or member.issym()) or root not in (target, *target.parents) \
                or root not in (link, *link.parents):
            raise RealMusicError(f'refusing to extract {member.name!r}: not a file, folder or link inside the tree')
    tar.extractall(dest)


def _extract_deb_python(deb: Path, dest: Path) -> None:
    """`dpkg-deb -x` without dpkg: a .deb is an ar archive whose `data.tar.*` member holds the files."""
    with open(deb, 'rb') as fp:
        if fp.read(8) != b'!<arch>\n':
            raise RealMusicError(f'{deb}: not a Debian package (no ar header)')
        while True:
            header = fp.read(60)
            if len(header) < 60:
                break
            member = header[:16].decode('ascii', 'replace').strip().rstrip('/')
            size = int(header[48:58].decode('ascii').strip())
            start = fp.tell()
            if member.startswith('data.tar'):
                if member.endswith('.zst'):
                    raise RealMusicError(f'{deb}: {member} is zstd-compressed, which Python cannot read: '
                                         'install dpkg (dpkg-deb)')
                with tarfile.open(fileobj=io.BytesIO(fp.read(size)), mode='r:*') as tar:
                    _extract_tar(tar, dest)
                return
            fp.seek(start + size + (size & 1))   # ar members are 2-byte aligned
    raise RealMusicError(f'{deb}: no data.tar member')


def extract_deb(deb: tp.Union[str, Path], dest: tp.Union[str, Path]) -> str:
    """Extract a .deb's files into `dest`. Returns the tool used ('dpkg-deb' or 'python')."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = shutil.which('dpkg-deb')
    if dpkg is not None:
        proc = subprocess.run([dpkg, '-x', str(deb), str(dest)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RealMusicError(f'dpkg-deb -x {deb} failed: {_tail(proc.stderr)}')
        return 'dpkg-deb'
    _extract_deb_python(Path(deb), dest)
    return 'python'


# --------------------------------------------------------------------------------------------
# Copyright: machine-readable (DEP-5) copyright files give per-file holders and licenses.
# --------------------------------------------------------------------------------------------
def parse_copyright(text: str) -> tp.Optional[tp.List[tp.Tuple[tp.List[str], tp.List[str], str]]]:
    """The `Files` paragraphs of a machine-readable Debian copyright file, in order, as
    (patterns, holders, license short name); None if the file is free-form (no `Format:` line)."""
    if not text.lstrip().startswith('Format:'):
        return None
    stanzas = []
    for para in re.split(r'\n[ \t]*\n', text):
        fields: tp.Dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (' ', '\t') and key is not None:
                fields[key] += '\n' + line.strip()
            elif ':' in line and not line.startswith('#'):
                key, value = line.split(':', 1)
                fields[key] = value.strip()
        if 'Files' in fields and fields.get('License', '').strip():
            holders = list(dict.fromkeys(ln.strip() for ln in fields.get('Copyright', '').splitlines()
                                         if ln.strip()))
            stanzas.append((fields['Files'].split(), holders, fields['License'].strip().splitlines()[0].strip()))
    return stanzas


def _dep5_match(pattern: str, path: str) -> bool:
    """DEP-5 patterns are relative to the upstream source tree, not to the installed path: compare as many trailing
    path components as the pattern has (at most two: 'base/music/x.ogg' matches '.../0music.pk3/music/x.ogg')."""
    if pattern == '*':
        return True
    parts = pattern.split('/')[-2:]
    return fnmatch.fnmatchcase('/'.join(path.split('/')[-len(parts):]), '/'.join(parts))


def track_rights(pkg: Package, stanzas: tp.Optional[list], path: str) -> tp.Tuple[str, str]:
    """(copyright holders, license) of one track: the last matching copyright paragraph (DEP-5 rule), then the
    table's `rights` overrides; the package's holders and first license if the copyright file is free-form.

    Raises:
        RealMusicError: the license found is not one the table states for the package.
    """
    holders, license_ = pkg.holders, pkg.licenses[0]
    for patterns, stanza_holders, stanza_license in stanzas or []:
        if any(_dep5_match(p, path) for p in patterns):
            holders, license_ = '; '.join(stanza_holders) or pkg.holders, stanza_license
    for glob, over_holders, over_license in pkg.rights:
        if fnmatch.fnmatchcase(path, glob):
            holders, license_ = over_holders, over_license
    if license_ not in pkg.licenses:
        raise RealMusicError(f'{pkg.name}: {path} is under {license_!r} by its copyright file, not one of the '
                             f'licenses the pinned table states ({", ".join(pkg.licenses)}): update the table')
    return holders, license_


def artist_of(holders: str) -> str:
    """Holders without their years: '2002 Michael Kievernagel' -> 'Michael Kievernagel'."""
    names = [re.sub(r'^[\s\d,\-–]+(?=\D)', '', h).strip() for h in re.split(r';\s*', holders)]
    return ', '.join(dict.fromkeys(n for n in names if n))


# --------------------------------------------------------------------------------------------
# Tracks: finding them, naming them, grouping them.
# --------------------------------------------------------------------------------------------
def _stem(path: str) -> str:
    return path.rsplit('/', 1)[-1].rsplit('.', 1)[0]


def title_of(pkg: Package, path: str) -> str:
    """Title from the file name: 'MarineAlienRaid.ogg' -> 'Marine Alien Raid', 'track12.ogg' -> 'Track 12'."""
    stem = _stem(path)
    if pkg.title_strip:
        stem = re.sub(pkg.title_strip, '', stem) or stem
    stem = re.sub(r'(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])', ' ', stem)
    words = [w for w in re.split(r'[\s_\-]+', stem) if w]
    return ' '.join(w[:1].upper() + w[1:] for w in words)


_VARIANT = re.compile(r'(?:[-_ ](?:enhanced|revisited|old|remix|alt|loop)|_)$')


def theme_of(pkg: Package, path: str) -> str:
    """Theme group of a track: its lower-case stem without variant suffixes ('sixtyfour_revisited' and 'sixtyfour_'
    -> 'sixtyfour', 'track3_enhanced' -> 'track3'), then the table's `theme_pattern` and `same_theme` merges."""
    stem = _stem(path).lower()
    key = stem
    while True:
        shorter = _VARIANT.sub('', key)
        if shorter == key or not shorter:
            break
        key = shorter
    if pkg.theme_pattern:
        m = re.match(pkg.theme_pattern, key)
        if m:
            key = m.group(1)
    for group in pkg.same_theme:
        if stem in group or key in group:
            key = group[0]
    return key


def _safe(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_-]+', '-', text).strip('-')


def scan_package(pkg: Package, tree: Path) -> tp.Tuple[tp.List[dict], tp.Dict[str, tp.List[str]]]:
    """The music files of an extracted package (zip members included), deduplicated by content.

    Returns:
        (candidates: dicts with package, path (in the package; 'x.pk3/member' for zip members), file, member,
        sha256, size; skipped: reason -> paths, for 'not_music' (audio outside the table's music globs: sound
        effects) and 'duplicate' (a link to, or a byte copy of, another music file)).
    """
    candidates: tp.List[dict] = []
    skipped: tp.Dict[str, tp.List[str]] = {'not_music': [], 'duplicate': []}
    seen: tp.Dict[str, str] = {}

    def consider(rel: str, file: Path, member: tp.Optional[str], read: tp.Callable[[], bytes]) -> None:
        if not any(fnmatch.fnmatchcase(rel, g) for g in pkg.music):
            skipped['not_music'].append(rel)
            return
        data = read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            skipped['duplicate'].append(rel)
            return
        seen[digest] = rel
        candidates.append(dict(package=pkg.name, path=rel, file=str(file), member=member, sha256=digest,
                               size=len(data)))

    for file in sorted(tree.rglob('*')):
        rel = file.relative_to(tree).as_posix()
        ext = file.suffix.lower()
        if file.is_symlink():
            if ext in AUDIO_EXTS and any(fnmatch.fnmatchcase(rel, g) for g in pkg.music):
                skipped['duplicate'].append(rel)   # same file reached twice (drascula's language folders)
            continue
        if not file.is_file():
            continue
        if ext in ARCHIVE_EXTS:
            with zipfile.ZipFile(file) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if not info.is_dir() and Path(info.filename).suffix.lower() in AUDIO_EXTS:
                        consider(f'{rel}/{info.filename}', file, info.filename,
                                 lambda zf=zf, info=info: zf.read(info))
        elif ext in AUDIO_EXTS:
            consider(rel, file, None, file.read_bytes)
    # Track ids: '<short>_<stem>', with the parent folder added where two stems collide.
    stems: tp.Dict[str, int] = {}
    for c in candidates:
        stems[_stem(c['path'])] = stems.get(_stem(c['path']), 0) + 1
    for c in candidates:
        stem = _stem(c['path'])
        parent = c['path'].rsplit('/', 2)[-2] if stems[stem] > 1 and '/' in c['path'] else ''
        c['id'] = _safe(f"{pkg.short}_{parent + '_' if parent else ''}{stem}")
        c['theme'] = theme_of(pkg, c['path'])
    return candidates, skipped


# --------------------------------------------------------------------------------------------
# Decoding one track (runs in worker processes).
# --------------------------------------------------------------------------------------------
def _read_source(task: dict) -> bytes:
    if task['member'] is not None:
        with zipfile.ZipFile(task['file']) as zf:
            return zf.read(task['member'])
    return Path(task['file']).read_bytes()


def decode_audio(data: bytes) -> tp.Tuple[np.ndarray, int, str, str]:
    """Decode a whole audio file: libsndfile (Ogg Vorbis/Opus, MP3, FLAC, WAV; AudioCraft's reader for .ogg and
    .flac), else PyAV/FFmpeg (which fails on some Ogg files libsndfile reads: hyperrogue's hr-savino-*.ogg).

    Returns:
        (float32 samples of shape [frames, channels], sample rate, decoder name, source format).
    """
    import soundfile as sf
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            wav = f.read(dtype='float32', always_2d=True)
            return wav, int(f.samplerate), 'libsndfile', f'{f.format}/{f.subtype}'
    except (sf.LibsndfileError, RuntimeError):
        pass
    import av
    chunks = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        sr = int(stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format='fltp')   # planar float whatever the codec's sample format
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        fmt = f'{container.format.name}/{stream.codec_context.name}'
    if not chunks:
        raise ValueError('no audio decoded')
    return np.concatenate(chunks, axis=1).T.astype(np.float32), sr, 'pyav', fmt


def to_mono_32k(wav: np.ndarray, sr: int) -> np.ndarray:
    """Average the channels (as AudioCraft's convert_audio_channels) and resample to 32 kHz with a polyphase
    Kaiser-windowed filter (scipy.signal.resample_poly)."""
    from math import gcd
    from scipy.signal import resample_poly
    mono = wav.mean(axis=1, dtype=np.float64) if wav.ndim == 2 else wav.astype(np.float64)
    if sr != SAMPLE_RATE:
        g = gcd(int(sr), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(sr) // g)
    return mono.astype(np.float32)


def _cache_key() -> dict:
    """What a decoded track depends on besides its source bytes (a partial build is resumed only if it matches)."""
    return dict(builder_version=BUILDER_VERSION, sample_rate=SAMPLE_RATE, target_lufs=TARGET_LUFS,
                peak_ceiling_db=PEAK_CEILING_DB)


def _decode_worker(task: dict) -> dict:
    """Decode, normalize and write one track into the partial build's tracks/ folder; never raises."""
    t0 = time.time()
    base = dict(id=task['id'], package=task['package'], path=task['path'])
    try:
        data = _read_source(task)
        wav, sr, decoder, fmt = decode_audio(data)
        seconds = len(wav) / sr
        if seconds < task['min_seconds']:
            return dict(base, ok=False, skip='short', reason=f'{seconds:.1f} s', seconds=seconds)
        mono = to_mono_32k(wav, sr)
        try:
            mono, lufs, gain_db = loudness_normalize(mono, SAMPLE_RATE)
        except ValueError:
            return dict(base, ok=False, skip='silent', reason='no audio above the -70 LUFS gate', seconds=seconds)
        out = Path(task['out'])
        tmp = out.with_name(f'.{out.name}.tmp')
        frames, amplitude = write_wav_pcm16(tmp, mono, SAMPLE_RATE)
        os.replace(tmp, out)
        done = dict(base, ok=True, frames=frames, amplitude=amplitude, loudness_lufs=round(lufs, 2),
                    gain_db=round(gain_db, 2), source_sha256=task['sha256'], source_sample_rate=sr,
                    source_channels=int(wav.shape[1]), source_format=fmt, decoder=decoder,
                    wav_sha256=sha256_file(out), key=_cache_key())
        # The .json is the track's completion marker: written last, atomically.
        write_text_atomic(out.with_suffix('.json'), json.dumps(done, indent=1) + '\n')
        return dict(done, elapsed=time.time() - t0)
    except Exception as exc:  # noqa: BLE001 - a track that fails is counted, never fatal
        msg = f'{type(exc).__name__}: {exc}'.replace('\n', ' ')
        return dict(base, ok=False, skip='failed', reason=msg[:300])


def _cached_track(task: dict) -> tp.Optional[dict]:
    """A track decoded by an interrupted build with the same source and settings, if its audio is intact."""
    out = Path(task['out'])
    try:
        done = json.loads(out.with_suffix('.json').read_text())
    except (OSError, ValueError):
        return None
    if (done.get('source_sha256') != task['sha256'] or done.get('key') != _cache_key()
            or not out.is_file() or sha256_file(out) != done.get('wav_sha256')):
        return None
    return done


# --------------------------------------------------------------------------------------------
# Splits.
# --------------------------------------------------------------------------------------------
def assign_splits(tracks: tp.Sequence[dict], whole: tp.Collection[str] = (),
                  fractions: tp.Optional[tp.Dict[str, float]] = None,
                  allow_empty: bool = False) -> tp.Dict[str, str]:
    """Track id -> split, by whole tracks, deterministically.

    Tracks are grouped (a `whole` package is one group; otherwise a package's tracks of one theme are a group) and
    groups never straddle splits. Whole soundtracks go to train. Per style, one group (the first by hash) is kept for
    train, so every style is in train. The other groups are ordered by a hash of package and theme, interleaved
    across packages by relative rank (stratified), and dealt out: the first three to evaluate, valid and generate,
    then each to the first held-out split still below its share of the total duration, else to train.

    Args:
        tracks: dicts with 'id', 'package', 'theme', 'style' and 'duration' (seconds).
        whole: packages whose tracks all stay in one split (train).
        fractions: held-out share of the total duration per split (default: `common.SPLIT_FRACTIONS`).
        allow_empty: allow held-out splits without tracks (a tiny package set); else that is an error.
    Returns:
        dict track id -> 'train' | 'valid' | 'evaluate' | 'generate'.
    Raises:
        RealMusicError: too few groups to fill every held-out split (unless `allow_empty`).
    """
    fractions = dict(SPLIT_FRACTIONS if fractions is None else fractions)
    groups: tp.Dict[str, dict] = {}
    for t in sorted(tracks, key=lambda t: t['id']):
        is_whole = t['package'] in whole
        key = t['package'] if is_whole else f"{t['package']}:{t['theme']}"
        g = groups.setdefault(key, dict(package=t['package'], style=t['style'], whole=is_whole, ids=[],
                                        seconds=0.0, hash=stable_hash(key)))
        g['ids'].append(t['id'])
        g['seconds'] += float(t['duration'])
    assignment: tp.Dict[str, str] = {}
    seconds = {s: 0.0 for s in SPLITS}

    def put(key: str, split: str) -> None:
        for i in groups[key]['ids']:
            assignment[i] = split
        seconds[split] += groups[key]['seconds']

    free = sorted((k for k, g in groups.items() if not g['whole']), key=lambda k: (groups[k]['hash'], k))
    for key, g in groups.items():
        if g['whole']:
            put(key, 'train')
    for style in sorted({g['style'] for g in groups.values()}):
        if not any(g['style'] == style and g['whole'] for g in groups.values()):
            first = next(k for k in free if groups[k]['style'] == style)
            put(first, 'train')
            free.remove(first)
    # Stratified order: rank within the package, interleaved by relative rank.
    by_package: tp.Dict[str, tp.List[str]] = {}
    for k in free:
        by_package.setdefault(groups[k]['package'], []).append(k)
    order_key = {k: ((rank + 0.5) / len(ks), groups[k]['hash'], k)
                 for ks in by_package.values() for rank, k in enumerate(ks)}
    total = sum(g['seconds'] for g in groups.values())
    targets = {s: fractions[s] * total for s in HELD_OUT}
    for i, key in enumerate(sorted(free, key=lambda k: order_key[k])):
        if i < len(HELD_OUT):
            put(key, HELD_OUT[i])
        else:
            put(key, next((s for s in HELD_OUT if seconds[s] < targets[s]), 'train'))
    empty = [s for s in SPLITS if s not in assignment.values()]
    if empty and not allow_empty:
        raise RealMusicError(
            f"too few tracks to fill every split: {', '.join(empty)} would be empty ({len(groups)} groups of "
            f"tracks, {len(free)} of them free to hold out; each held-out split needs one group and every style "
            "keeps one in train). Add packages (--packages), or pass --allow-empty-splits for a build that cannot "
            "train (AudioCraft refuses empty manifests)")
    return assignment


# --------------------------------------------------------------------------------------------
# Building.
# --------------------------------------------------------------------------------------------
def _config(packages: tp.Sequence[Package], min_seconds: float, allow_empty: bool) -> dict:
    return dict(packages=[dict(name=p.name, version=p.version, sha256=p.sha256) for p in packages],
                sample_rate=SAMPLE_RATE, target_lufs=TARGET_LUFS, peak_ceiling_db=PEAK_CEILING_DB,
                min_seconds=float(min_seconds), allow_empty_splits=bool(allow_empty),
                split_fractions=dict(SPLIT_FRACTIONS), whole=[p.name for p in packages if p.whole])


def _tool_versions(extractor: str) -> dict:
    from importlib.metadata import version
    out: tp.Dict[str, tp.Optional[str]] = {'python': sys.version.split()[0], 'extractor': extractor}
    for mod in ('numpy', 'scipy', 'soundfile', 'pyloudnorm', 'av'):
        try:
            out[mod] = version(mod)
        except Exception:  # noqa: BLE001
            out[mod] = None
    try:
        import soundfile
        out['libsndfile'] = soundfile.__libsndfile_version__
    except Exception:  # noqa: BLE001
        out['libsndfile'] = None
    return out


def _sidecar(pkg: Package, track: dict, split: str, holders: str, license_: str) -> dict:
    title = title_of(pkg, track['path'])
    moods = list(pkg.moods)
    style_words = pkg.style if pkg.style.endswith(('score', 'instrumental')) else f'{pkg.style} piece'
    article = 'an' if style_words[:1].lower() in 'aeiou' else 'a'
    description = f"{title}, {article} {style_words} from the soundtrack of {pkg.game}, {' and '.join(moods[:2])}."
    duration = track['frames'] / SAMPLE_RATE
    return dict(
        title=title, artist=artist_of(holders), key=None, bpm=None, genre=pkg.style, moods=moods,
        keywords=list(dict.fromkeys([pkg.game.lower(), pkg.style, *pkg.keywords])), description=description,
        name=track['id'], instrument=pkg.instrument,
        duration=duration, sample_rate=SAMPLE_RATE, file_extension='wav', split=split,
        # provenance (ignored by MusicInfo.from_dict)
        game=pkg.game, style=pkg.style, package=pkg.name, package_version=pkg.version, source=track['path'],
        license=license_, copyright=holders, group=f"{pkg.name}:{track['theme']}" if not pkg.whole else pkg.name,
        source_sha256=track['source_sha256'], source_sample_rate=track['source_sample_rate'],
        source_channels=track['source_channels'], source_format=track['source_format'],
        decoder=track['decoder'], loudness_lufs=track['loudness_lufs'], gain_db=track['gain_db'],
    )


def _attribution(packages: tp.Sequence[Package], entries: tp.List[dict], copyright_files: tp.Dict[str, str]) -> str:
    lines = [
        'Real-music dataset: attribution',
        '',
        'Every audio file here is a track of a Debian package (Debian 12 "bookworm", main), decoded, downmixed to',
        f'mono, resampled to {SAMPLE_RATE} Hz and loudness-normalized (-18 LUFS, -1 dBFS peak ceiling) by',
        'audiocraft_mmd.data.real_music: a modified version of the original recording. The package\'s copyright file',
        'is copied verbatim into licenses/. Track licenses are those the copyright file (or, for warzone2100-music,',
        'the album\'s license.txt) gives for that file.',
        '',
    ]
    for pkg in packages:
        mine = [e for e in entries if e['package'] == pkg.name]
        lines += [f'== {pkg.name} {pkg.version} ({pkg.game})',
                  f'   copyright: {pkg.holders}',
                  f"   license(s): {', '.join(sorted({e['license'] for e in mine})) or '-'}",
                  f'   source: {pkg.url} (sha256 {pkg.sha256})',
                  f'   copyright file: {copyright_files.get(pkg.name, "-")}',
                  f'   {len(mine)} tracks:']
        for e in mine:
            lines.append(f"   {e['split']}/{e['id']}.wav  <-  {e['path']}  |  {e['holders']}  |  {e['license']}")
        lines.append('')
    return '\n'.join(lines)


def _print_summary(s: dict) -> None:
    print(f"[real_music] dataset '{s['name']}': {', '.join(s['packages'])}")
    print(f"  audio:     {s['audio_dir']}")
    print(f"  manifests: {s['manifest_dir']}")
    for split in SPLITS:
        d = s['splits'][split]
        print(f"  {split:<9} {d['tracks']:>4} tracks  {d['hours']:.3f} h")
    print(f"  total     {s['total_tracks']:>4} tracks  {s['total_hours']:.3f} h")
    for name, d in s['per_package'].items():
        print(f"    {name:<22} {d['tracks']:>4} tracks  {d['hours']:.3f} h  ({d['style']}, {d['license']})")
    counts = ', '.join(f'{k} {v}' for k, v in s['skipped_counts'].items())
    print(f"  skipped:  {counts}")
    for item in s['skipped'].get('failed', []):
        print(f"    - failed {item['path']}: {item['reason'][:160]}")
    print(f"  build time: {s['elapsed_s']:.1f} s" + (' (already built and verified, nothing to do)'
                                                     if s.get('already_built') else ''))


@dataclasses.dataclass
class _Decoded:
    """What the decoding pass over the packages found."""
    done: tp.List[dict]                          # decoded tracks (the workers' results), sorted by id
    skipped: tp.Dict[str, tp.List[dict]]         # reason -> [{package, path, reason?}]
    rights: tp.Dict[str, tp.Tuple[str, str]]     # track id -> (holders, license)
    copyright_text: tp.Dict[str, str]            # package -> its Debian copyright file
    extractor: str


def _decode_packages(pkgs: tp.Sequence[Package], debs_found: tp.Dict[str, Path], partial: Path, min_seconds: float,
                     n_workers: int, verbose: bool) -> _Decoded:
    """Extract each package, find its music and decode every track not already decoded into `partial/tracks/`."""
    pool = multiprocessing.get_context('spawn').Pool(n_workers, maxtasksperchild=20) if n_workers > 1 else None
    out = _Decoded(done=[], skipped={k: [] for k in ('not_music', 'duplicate', 'short', 'silent', 'failed')},
                   rights={}, copyright_text={}, extractor='dpkg-deb')
    try:
        for pkg in pkgs:
            tree = partial / 'extract' / pkg.name
            shutil.rmtree(tree, ignore_errors=True)
            out.extractor = extract_deb(debs_found[pkg.name], tree)
            cfile = tree / 'usr' / 'share' / 'doc' / pkg.name / 'copyright'
            if not cfile.is_file():
                raise RealMusicError(f'{pkg.name}: no usr/share/doc/{pkg.name}/copyright: license unknown')
            out.copyright_text[pkg.name] = cfile.read_text(encoding='utf-8', errors='replace')
            stanzas = parse_copyright(out.copyright_text[pkg.name])
            candidates, pkg_skipped = scan_package(pkg, tree)
            for reason, paths in pkg_skipped.items():
                out.skipped[reason].extend(dict(package=pkg.name, path=p) for p in paths)
            theme = {c['id']: c['theme'] for c in candidates}
            tasks = []
            for c in candidates:
                out.rights[c['id']] = track_rights(pkg, stanzas, c['path'])
                task = dict(c, out=str(partial / 'tracks' / f"{c['id']}.wav"), min_seconds=float(min_seconds))
                cached = _cached_track(task)
                if cached is not None:
                    out.done.append(dict(cached, theme=c['theme']))
                else:
                    tasks.append(task)
            if verbose:
                print(f'[real_music] {pkg.name} {pkg.version}: {len(candidates)} music files '
                      f'({len(candidates) - len(tasks)} already decoded), {len(pkg_skipped["not_music"])} '
                      f'other audio files, {len(pkg_skipped["duplicate"])} duplicates', flush=True)
            results = pool.imap_unordered(_decode_worker, tasks) if pool else map(_decode_worker, tasks)
            for r in results:
                if r['ok']:
                    out.done.append(dict(r, theme=theme[r['id']]))
                else:
                    out.skipped[r['skip']].append(dict(package=r['package'], path=r['path'], reason=r['reason']))
                    if verbose and r['skip'] == 'failed':
                        print(f"  FAILED {r['path']}: {r['reason'][:160]}", flush=True)
            shutil.rmtree(tree, ignore_errors=True)   # extracted trees are large: one at a time
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    shutil.rmtree(partial / 'extract', ignore_errors=True)
    out.done.sort(key=lambda d: d['id'])
    return out


def _stage(pkgs: tp.Sequence[Package], dec: _Decoded, assignment: tp.Dict[str, str], partial: Path, root: Path,
           adir: Path, mdir: Path) -> tp.Tuple[Path, Path, tp.Dict[str, tp.List[dict]], tp.List[dict],
                                               tp.Dict[str, str]]:
    """Assemble the final tree inside `partial/out` (audio, sidecars, licenses, ATTRIBUTION; manifests already
    holding the final paths). Returns (staged audio dir, staged egs dir, manifest entries per split, attribution
    entries, checksums keyed by the final path relative to `root`)."""
    by_name = {p.name: p for p in pkgs}
    staged = partial / 'out'
    shutil.rmtree(staged, ignore_errors=True)
    s_audio, s_egs = staged / 'audio', staged / 'egs'
    entries: tp.Dict[str, tp.List[dict]] = {s: [] for s in SPLITS}
    attribution: tp.List[dict] = []
    for d in dec.done:
        split = assignment[d['id']]
        pkg = by_name[d['package']]
        (s_audio / split).mkdir(parents=True, exist_ok=True)
        holders, license_ = dec.rights[d['id']]
        staged_wav = s_audio / split / f"{d['id']}.wav"
        os.replace(partial / 'tracks' / f"{d['id']}.wav", staged_wav)
        write_sidecar(staged_wav, _sidecar(pkg, d, split, holders, license_))
        final_wav = adir / split / f"{d['id']}.wav"
        entries[split].append(manifest_entry(final_wav, d['frames'] / SAMPLE_RATE, SAMPLE_RATE, d['amplitude']))
        attribution.append(dict(package=pkg.name, id=d['id'], split=split, path=d['path'], holders=holders,
                                license=license_))
    for split in SPLITS:
        write_manifest(s_egs / split / 'data.jsonl', entries[split])
    (s_audio / 'licenses').mkdir(parents=True, exist_ok=True)
    copyright_files = {}
    for pkg in pkgs:
        dest = s_audio / 'licenses' / f'{pkg.name}.copyright'
        dest.write_text(dec.copyright_text[pkg.name], encoding='utf-8')
        copyright_files[pkg.name] = f'licenses/{dest.name}'
    (s_audio / ATTRIBUTION).write_text(_attribution(pkgs, attribution, copyright_files) + '\n', encoding='utf-8')
    files = {}
    for base, final in ((s_audio, adir), (s_egs, mdir)):
        for f in sorted(base.rglob('*')):
            if f.is_file():
                files[(final / f.relative_to(base)).relative_to(root).as_posix()] = sha256_file(f)
    return s_audio, s_egs, entries, attribution, files


def _swap_in(staged: tp.Sequence[tp.Tuple[Path, Path]], partial: Path, mdir: Path, record: dict) -> None:
    """Move the staged folders into place. The old record goes first (an interrupted swap never looks complete),
    the new record comes last; the partial folder (old build included) is removed at the end."""
    (mdir / RECORD).unlink(missing_ok=True)
    old = partial / 'old'
    old.mkdir(exist_ok=True)
    for staged_dir, final in staged:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, old / f'{final.parent.name}_{final.name}')
        os.replace(staged_dir, final)
    write_text_atomic(mdir / RECORD, json.dumps(record, indent=1) + '\n')
    shutil.rmtree(partial, ignore_errors=True)


def build(packages: tp.Optional[tp.Sequence[str]] = None, out: tp.Optional[tp.Union[str, Path]] = None,
          cache: tp.Optional[tp.Union[str, Path]] = None, debs: tp.Optional[tp.Union[str, Path]] = None,
          workers: tp.Optional[int] = None, force: bool = False, min_seconds: float = MIN_SECONDS,
          allow_empty_splits: bool = False, name: str = NAME, verbose: bool = True) -> dict:
    """Build (or verify and reuse) the real-music dataset; returns a summary dict.

    Args:
        packages: pinned package names (default: `DEFAULT_PACKAGES`; ['all']: every pinned package).
        out: root folder: audio in `<out>/dataset/<name>/<split>/`, manifests and the build record in
            `<out>/egs/<name>/`. Default: the repository root.
        cache: folder for the fetched .deb files (default `<out>/dataset/.cache/debs`); kept between builds.
        debs: folder of pre-downloaded .deb files: apt-get is not used.
        workers: decoding processes (default: number of CPUs, at most 4); <= 1 decodes in-process.
        force: rebuild even if a verified build of the same config exists (the .deb cache is reused).
        min_seconds: shorter audio files are skipped (jingles, stingers) and counted.
        allow_empty_splits: for package sets too small to fill 4 splits (asc-music alone): write empty held-out
            manifests instead of failing. Such a build cannot train.
        name: dataset name (folder names and the `dset` config's paths).
    Returns:
        The summary (also stored in the build record): splits, per-package tracks and hours, skipped counts.
    Raises:
        FetchError: the packages could not be fetched (the message names the fixes).
        RealMusicError: another reason the build cannot complete (too few tracks for the splits, ...).
    """
    t0 = time.time()
    pkgs = select_packages(packages)
    root = _root(out)
    cfg = _config(pkgs, min_seconds, allow_empty_splits)
    mdir, adir = manifest_dir(root, name), audio_dir(root, name)
    record = read_record(root, name)
    if not force and record is not None and record.get('config') == cfg:
        problems = verify(root, name)
        if not problems:
            summary = dict(record['summary'], already_built=True, elapsed_s=round(time.time() - t0, 2))
            if verbose:
                _print_summary(summary)
            return summary
        if verbose:
            print(f'[real_music] the existing build does not verify ({len(problems)} problem(s), e.g. '
                  f'{problems[0]}): rebuilding', flush=True)

    partial = _partial_dir(root, name)
    # An interrupted build's decoded tracks are reused (each is checked against its source and settings, see
    # _cached_track); --force starts from scratch (the .deb cache stays).
    if force:
        shutil.rmtree(partial, ignore_errors=True)
    (partial / 'tracks').mkdir(parents=True, exist_ok=True)
    try:
        debs_found = fetch_debs(pkgs, cache if cache is not None else default_cache(root), debs, verbose)
    except RealMusicError:
        if not any((partial / 'tracks').iterdir()):
            shutil.rmtree(partial, ignore_errors=True)   # nothing decoded yet: leave no trace
        raise
    n_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    dec = _decode_packages(pkgs, debs_found, partial, min_seconds, n_workers, verbose)
    styles = {p.name: p.style for p in pkgs}
    tracks = [dict(id=d['id'], package=d['package'], theme=d['theme'], style=styles[d['package']],
                   duration=d['frames'] / SAMPLE_RATE) for d in dec.done]
    assignment = assign_splits(tracks, whole={p.name for p in pkgs if p.whole}, allow_empty=allow_empty_splits)
    s_audio, s_egs, entries, attribution, files = _stage(pkgs, dec, assignment, partial, root, adir, mdir)

    splits = {}
    for split in SPLITS:
        mine = [e for e in attribution if e['split'] == split]
        splits[split] = dict(tracks=len(mine), hours=round(sum(e['duration'] for e in entries[split]) / 3600, 4),
                             packages={p.name: sum(e['package'] == p.name for e in mine) for p in pkgs},
                             track_ids=[e['id'] for e in mine])
    per_package = {}
    for pkg in pkgs:
        mine = [d for d in dec.done if d['package'] == pkg.name]
        per_package[pkg.name] = dict(
            version=pkg.version, tracks=len(mine), style=pkg.style, whole=pkg.whole,
            hours=round(sum(d['frames'] for d in mine) / SAMPLE_RATE / 3600, 4),
            license=', '.join(sorted({dec.rights[d['id']][1] for d in mine})) or '-')
    summary = dict(
        name=name, packages=[p.name for p in pkgs], audio_dir=str(adir), manifest_dir=str(mdir),
        splits=splits, total_tracks=len(dec.done), total_hours=round(sum(d['hours'] for d in splits.values()), 4),
        per_package=per_package, skipped_counts={k: len(v) for k, v in dec.skipped.items()}, skipped=dec.skipped,
        elapsed_s=round(time.time() - t0, 1), workers=n_workers, already_built=False)
    licenses_dir = adir.relative_to(root).as_posix() + '/licenses'
    record = dict(
        builder_version=BUILDER_VERSION, name=name, config=cfg,
        packages=[dict(name=p.name, version=p.version, sha256=p.sha256, size=p.size, deb_file=p.deb_file,
                       url=p.url, deb_used=str(debs_found[p.name].resolve()),
                       copyright_sha256=files[f'{licenses_dir}/{p.name}.copyright']) for p in pkgs],
        tools=_tool_versions(dec.extractor), empty_splits=[s for s in SPLITS if not entries[s]],
        files=files, summary=summary)
    _swap_in([(s_audio, adir), (s_egs, mdir)], partial, mdir, record)
    if verbose:
        _print_summary(summary)
    return summary


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------
def _list() -> None:
    total = 0.0
    print(f"{'package':<23} {'version':<11} {'MB':>5} {'tracks':>6} {'hours':>6}  {'style':<21} license(s)")
    for p in PACKAGES.values():
        mark = '*' if p.name in DEFAULT_PACKAGES else ' '
        total += p.hours if p.name in DEFAULT_PACKAGES else 0.0
        print(f"{mark}{p.name:<22} {p.version:<11} {p.size / 1e6:>5.0f} {p.tracks:>6} {p.hours:>6.2f}  "
              f"{p.style:<21} {', '.join(p.licenses)}" + (f'  [{p.note}]' if p.note else ''))
    print(f'* default set: {total:.2f} h of music')


def _check(out: tp.Optional[str], name: str, full: bool) -> int:
    from . import check
    root = _root(out)
    if read_record(root, name) is None:
        print(missing_message(name) + (f' --out {out}' if out is not None else ''))
        return 1
    problems = verify(root, name)
    if problems:
        print(f'{len(problems)} file(s) differ from the build record:\n  ' + '\n  '.join(problems[:50])
              + '\n  fix: rerun `python -m audiocraft_mmd.data.real_music` (it rebuilds what does not verify)')
        return 1
    total, bad = check.check_manifests([manifest_dir(root, name)], full=full)
    if bad:
        print(check.report(bad))
        return 1
    print(f"{manifest_dir(root, name)}: every file matches the build record's checksum; {total} audio files open "
          f"at the sample rate and duration their manifests say ({'full decode' if full else 'headers checked'})")
    return 0


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m audiocraft_mmd.data.real_music',
        description='Fetch pinned Debian game-soundtrack packages and build a 32 kHz mono AudioCraft/MusicGen '
                    'dataset of real recordings (see docs/real_music.md).')
    parser.add_argument('--packages', nargs='+', default=None, metavar='NAME',
                        help=f"pinned packages to use (default: {' '.join(DEFAULT_PACKAGES)}; 'all': every one)")
    parser.add_argument('--out', default=None,
                        help='root folder for dataset/<name>/ and egs/<name>/ (default: the repo root)')
    parser.add_argument('--cache', default=None, help='where fetched .deb files are kept (default: '
                        '<out>/dataset/.cache/debs)')
    parser.add_argument('--debs', default=None, metavar='DIR',
                        help='use pre-downloaded .deb files from DIR instead of apt-get')
    parser.add_argument('--workers', type=int, default=None, help='decoding processes (default: #CPUs, at most 4)')
    parser.add_argument('--force', action='store_true', help='rebuild even if a verified build exists')
    parser.add_argument('--min-seconds', type=float, default=MIN_SECONDS,
                        help=f'skip audio files shorter than this (default {MIN_SECONDS:g})')
    parser.add_argument('--allow-empty-splits', action='store_true',
                        help='for package sets too small for 4 splits: write empty held-out manifests (such a '
                             'build cannot train)')
    parser.add_argument('--name', default=NAME, help=f'dataset name (default {NAME})')
    parser.add_argument('--list', action='store_true', help='print the pinned packages and exit')
    parser.add_argument('--check', action='store_true',
                        help="build nothing: verify the build record's checksums and open every audio file's "
                             'header; exit code 0 if all is well, 1 if not')
    parser.add_argument('--full', action='store_true', help='with --check: decode every file to its end')
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    if args.check:
        return _check(args.out, args.name, args.full)
    try:
        build(packages=args.packages, out=args.out, cache=args.cache, debs=args.debs, workers=args.workers,
              force=args.force, min_seconds=args.min_seconds, allow_empty_splits=args.allow_empty_splits,
              name=args.name)
    except RealMusicError as exc:
        print(f'[real_music] error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
