"""Real recordings, offline: free game soundtracks from Debian's archive as an AudioCraft/MusicGen dataset.

The embedded preset (`embedded_music`) is General-MIDI renderings of classical scores; a tokenizer trained on it
does not transfer to produced music (mixed instruments, drums, synths, reverb). Debian's `main` archive, which every
machine here reaches through `apt-get`, holds hours of DFSG-free game soundtracks in several styles. This builder:

* fetches a PINNED list of those packages (name, exact version, sha256 as `apt-get download --print-uris` prints
  them: the catalogue, `real_music_catalogue`) with `apt-get download` (no root) into a cache, or takes them from a
  folder (`--debs DIR`), and checks each sha256 (`debian`);
* extracts them (`dpkg-deb -x`, or Python's ar/tar reader where dpkg-deb is absent), keeps the music files
  (sound effects, duplicates and clips under 10 s are skipped and counted), decodes each track whole (libsndfile,
  else PyAV/FFmpeg), downmixes to mono, resamples to 32 kHz and normalizes the loudness exactly as the embedded
  preset does (`common.loudness_normalize`: -18 LUFS, -1 dBFS peak ceiling);
* splits by track, never within a track, deterministically (hash of package and theme group), keeping tracks that
  share material together and a `whole` soundtrack in one split, with every style in train;
* writes 16-bit WAV files with MusicGen `.json` sidecars, AudioCraft manifests, an ATTRIBUTION file with the
  package's copyright file next to the audio (track rights from its DEP-5 paragraphs, `debian.parse_copyright`),
  and a build record (`common.RECORD`) with every checksum and the command that rebuilds it, written last.

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
import sys
import time
import typing as tp
import zipfile

import numpy as np

from . import common
from .common import (PEAK_CEILING_DB, REPO_ROOT, SAMPLE_RATE, SPLIT_FRACTIONS, SPLITS, TARGET_LUFS,
                     loudness_normalize, manifest_entry, sha256_file, stable_hash, write_manifest, write_sidecar,
                     write_text_atomic, write_wav_pcm16)
from .debian import DebianError, dep5_rights, extract_deb, fetch_debs, parse_copyright
from .real_music_catalogue import DEFAULT_PACKAGES, PACKAGES, Package

BUILDER_VERSION = 1
NAME = 'real_music'
MIN_SECONDS = 10.0             # shorter audio files are jingles / stingers / sound effects, not tracks
AUDIO_EXTS = ('.ogg', '.oga', '.opus', '.mp3', '.flac', '.wav')
ARCHIVE_EXTS = ('.pk3', '.zip')  # Quake-engine games ship their music in zip files
ATTRIBUTION = 'ATTRIBUTION'
HELD_OUT = ('evaluate', 'valid', 'generate')   # the order in which held-out splits get their first group


class RealMusicError(RuntimeError):
    """A build that cannot go on; the message says why and how to fix it. (A package that cannot be fetched or
    extracted raises `debian.DebianError`: `FetchError` for the fetch.)"""


# --------------------------------------------------------------------------------------------
# Paths and status (`common`'s, with this preset's default name).
# --------------------------------------------------------------------------------------------
def manifest_dir(name: str = NAME, root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding `<split>/data.jsonl` and the build record (`<root>/egs/<name>`)."""
    return common.manifest_dir(name, root)


def audio_dir(name: str = NAME, root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding `<split>/<track>.wav|.json`, ATTRIBUTION and licenses/ (`<root>/dataset/<name>`)."""
    return common.audio_dir(name, root)


def default_cache(root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Where fetched .deb files are kept between builds: `<root>/dataset/.cache/debs`."""
    return common.dataset_root(root) / 'dataset' / '.cache' / 'debs'


def _partial_dir(root: Path, name: str) -> Path:
    return root / 'dataset' / f'.{name}.partial'


def read_record(name: str = NAME, root: tp.Optional[tp.Union[str, Path]] = None) -> tp.Optional[dict]:
    """The build record, or None if there is no complete build."""
    return common.read_record(name, root)


def is_built(name: str = NAME, root: tp.Optional[tp.Union[str, Path]] = None) -> bool:
    """Cheap check (no checksums): a record of this builder version, the 4 manifests, every listed file present
    and no split empty unless the build allowed it. `verify` checks the checksums."""
    return common.is_built(name, root, builder_version=BUILDER_VERSION)


def missing_message(name: str = NAME) -> str:
    return (f"real-music dataset '{name}' not built: run `make dataset-real` "
            "(python -m audiocraft_mmd.data.real_music; fetches Debian packages with apt-get)")


def verify(name: str = NAME, root: tp.Optional[tp.Union[str, Path]] = None) -> tp.List[str]:
    """Recompute the checksum of every file the build record lists. Returns the problems (empty: verified)."""
    root = common.dataset_root(root)
    record = read_record(name, root)
    if record is None:
        return [f'no build record at {manifest_dir(name, root) / common.RECORD}']
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


# --------------------------------------------------------------------------------------------
# Rights: the copyright file's (DEP-5) paragraphs, then the catalogue's overrides.
# --------------------------------------------------------------------------------------------
def track_rights(pkg: Package, stanzas: tp.Optional[list], path: str) -> tp.Tuple[str, str]:
    """(copyright holders, license) of one track: the last matching copyright paragraph (DEP-5 rule), then the
    table's `rights` overrides; the package's holders and first license if the copyright file is free-form.

    Raises:
        RealMusicError: the license found is not one the table states for the package.
    """
    holders, license_ = pkg.holders, pkg.licenses[0]
    matched = dep5_rights(stanzas, path)
    if matched is not None:
        holders, license_ = '; '.join(matched[0]) or pkg.holders, matched[1]
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
    (mdir / common.RECORD).unlink(missing_ok=True)
    old = partial / 'old'
    old.mkdir(exist_ok=True)
    for staged_dir, final in staged:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, old / f'{final.parent.name}_{final.name}')
        os.replace(staged_dir, final)
    common.write_record(mdir, record)
    shutil.rmtree(partial, ignore_errors=True)


def rebuild_command(pkgs: tp.Sequence[Package], root: Path, name: str, min_seconds: float, allow_empty: bool,
                    cache: tp.Optional[tp.Union[str, Path]] = None,
                    debs: tp.Optional[tp.Union[str, Path]] = None) -> str:
    """The command line that builds this dataset again, for its build record: a rerun verifies every checksum and
    rebuilds what does not match, from the same .deb files (a `--debs` folder, or a cache other than the default).
    """
    args = []
    names = [p.name for p in pkgs]
    if names != list(DEFAULT_PACKAGES):
        args += ['--packages', *names]
    if Path(root).resolve() != REPO_ROOT.resolve():
        args += ['--out', str(root)]
    if name != NAME:
        args += ['--name', name]
    if float(min_seconds) != MIN_SECONDS:
        args += ['--min-seconds', f'{min_seconds:g}']
    if allow_empty:
        args.append('--allow-empty-splits')
    if debs is not None:
        args += ['--debs', str(Path(debs).resolve())]
    elif cache is not None and Path(cache).resolve() != default_cache(root).resolve():
        args += ['--cache', str(Path(cache).resolve())]
    return common.command('audiocraft_mmd.data.real_music', args)


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
        debian.DebianError: the packages could not be fetched (`FetchError`) or extracted (the message names
            the fixes).
        RealMusicError: another reason the build cannot complete (too few tracks for the splits, ...).
    """
    t0 = time.time()
    pkgs = select_packages(packages)
    root = common.dataset_root(out)
    cfg = _config(pkgs, min_seconds, allow_empty_splits)
    mdir, adir = manifest_dir(name, root), audio_dir(name, root)
    record = read_record(name, root)
    if not force and record is not None and record.get('config') == cfg:
        problems = verify(name, root)
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
    except DebianError:
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
        files=files, summary=summary,
        rebuild=rebuild_command(pkgs, root, name, min_seconds, allow_empty_splits, cache=cache, debs=debs))
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
    root = common.dataset_root(out)
    if read_record(name, root) is None:
        print(missing_message(name) + (f' --out {out}' if out is not None else ''))
        return 1
    problems = verify(name, root)
    if problems:
        print(f'{len(problems)} file(s) differ from the build record:\n  ' + '\n  '.join(problems[:50])
              + '\n  fix: rerun `python -m audiocraft_mmd.data.real_music` (it rebuilds what does not verify)')
        return 1
    total, bad = check.check_manifests([manifest_dir(name, root)], full=full)
    if bad:
        print(check.report(bad))
        return 1
    print(f"{manifest_dir(name, root)}: every file matches the build record's checksum; {total} audio files open "
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
    except (RealMusicError, DebianError) as exc:
        print(f'[real_music] error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
