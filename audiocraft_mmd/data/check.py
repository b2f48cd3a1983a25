"""Check the audio files an AudioCraft manifest (`data.jsonl`) lists, and say which are bad and how to fix them.

AudioCraft finds a bad file only when a training or evaluation step reads it: `AudioDataset` logs "Error opening
file", draws another file up to `max_read_retry` (10) times and then re-raises the decoder's error (PyAV's
`FileNotFoundError` / `InvalidDataError`, or a bare `AssertionError` from `_av_read` when it seeks past the end of
a truncated file); without segments (`segment_duration=None`) the first error is raised. A file at another
sample rate than the manifest says is not an error there at all: `convert_audio` resamples it silently.

`check_manifests(paths)` opens every listed file's header (libsndfile, then PyAV/FFmpeg for what libsndfile
cannot open: the readers AudioCraft's `audio_read` uses) and compares it with its manifest line: missing file,
unreadable/non-audio file, duration shorter or longer than the manifest's (truncated file or stale manifest),
sample rate other than the manifest's. `full=True` also decodes every file to the end (catches corrupt data
inside compressed files; PCM WAV has no such failure mode). Measured on the 2-core development machine, page
cache warm: headers of the small embedded set's 51 files 8 ms, full decode 0.17 s for its 0.98 h of 32 kHz
PCM_16 audio (so about 2.5 s for the large set's 12.7 h), while other jobs used the CPUs.

Used by `python -m audiocraft_mmd.data.embedded_music --check [MANIFEST...]`, `python -m audiocraft_mmd.data.real_music
--check`, `python -m audiocraft_mmd.doctor` and `python -m audiocraft_mmd.evaluate` (before it starts). A bad file's fix
names the command that rebuilds its preset where one of these builders wrote it: each builder writes that command
into its build record (`common.RECORD`), so the checker imports no builder.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
import typing as tp

from .common import load_record

# The file's duration may differ from the manifest's by this much (readers round differently: PyAV reports
# durations in its stream time base).
DURATION_TOLERANCE_S = 0.05


@dataclasses.dataclass
class BadFile:
    """One bad manifest entry: where it is, what is wrong, how to fix it."""
    manifest: str
    line: int          # 1-based line number in the manifest
    path: str          # the audio path as listed (resolved if relative)
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path} ({self.manifest}, line {self.line}): {self.problem}\n    fix: {self.fix}"


class BadManifestError(RuntimeError):
    """Raised by `require_clean` when a manifest lists bad files; `.bad` holds them."""

    def __init__(self, bad: tp.List[BadFile]):
        self.bad = bad
        super().__init__(report(bad))


def manifest_files(path: tp.Union[str, Path]) -> tp.List[Path]:
    """The manifest files under `path`: a `data.jsonl[.gz]` file, a split folder holding one, or a folder of
    split folders (e.g. `egs/embedded_music`). Raises FileNotFoundError when there is none."""
    path = Path(path)
    if path.is_file():
        return [path]
    for name in ('data.jsonl', 'data.jsonl.gz'):
        if (path / name).is_file():
            return [path / name]
    found = sorted(p for p in path.glob('*/data.jsonl*') if p.name in ('data.jsonl', 'data.jsonl.gz'))
    if not found:
        raise FileNotFoundError(f"no AudioCraft manifest (data.jsonl) at or under {path}")
    return found


def _open_text(path: Path) -> tp.IO[str]:
    return gzip.open(path, 'rt', encoding='utf-8') if path.suffix == '.gz' else open(path, encoding='utf-8')


def _fix(manifest: Path, line: int, what: str) -> str:
    """How to fix a bad line: the command that rebuilds the dataset, as its builder wrote it into the build record
    next to the manifests (`<root>/egs/<name>/<split>/data.jsonl`), else by hand."""
    record = load_record(manifest.parent.parent)
    if record is not None and record.get('rebuild'):
        return f"rebuild the dataset: `{record['rebuild']}`"
    fix = (f"{what}, or remove line {line} of {manifest}, or rewrite the manifest from the audio folder with "
           "`python -m audiocraft.data.audio_dataset AUDIO_DIR " + str(manifest) + "`")
    if record is not None and 'rebuild' not in record:  # built before the builders recorded their command
        fix += ", or rebuild the dataset with the command that built it (with --force)"
    return fix


def _header(path: Path) -> tp.Tuple[int, float]:
    """(sample rate, duration in s) from the file's header: libsndfile, else PyAV (FFmpeg), as AudioCraft reads
    .wav/.mp3/... through PyAV and .flac/.ogg through libsndfile. Raises the second reader's error."""
    import soundfile
    try:
        info = soundfile.info(str(path))
        return int(info.samplerate), float(info.frames) / info.samplerate
    except Exception:  # noqa: BLE001 - not a libsndfile format: try FFmpeg
        pass
    import av
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError('no audio stream')
        stream = container.streams.audio[0]
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = float(container.duration or 0) / av.time_base
        return int(stream.codec_context.sample_rate), duration


def _decode_all(path: Path) -> float:
    """Decode the whole file; returns its duration in seconds."""
    import soundfile
    try:
        with soundfile.SoundFile(str(path)) as f:
            frames = 0
            for block in f.blocks(blocksize=1 << 18, dtype='int16' if f.subtype == 'PCM_16' else 'float32'):
                frames += len(block)
            return frames / f.samplerate
    except soundfile.LibsndfileError:
        pass
    import av
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def check_entry(meta: dict, manifest: Path, line: int, full: bool = False) -> tp.Optional[BadFile]:
    """Check one manifest line (already parsed); None if the file is fine."""
    path = Path(meta['path'])
    shown = str(path)

    def bad(problem: str, what: str) -> BadFile:
        return BadFile(str(manifest), line, shown, problem, _fix(manifest, line, what))

    if not path.exists():
        return bad("file not found", "restore the file")
    if not path.is_file():
        return bad("not a file", "point the line at an audio file")
    try:
        sample_rate, duration = _header(path)
    except Exception as exc:  # noqa: BLE001 - whatever the decoders say, the file is unusable
        size = path.stat().st_size
        reason = 'empty file' if size == 0 else f"{type(exc).__name__}: {exc}".replace('\n', ' ')[:200]
        return bad(f"not an audio file that libsndfile or FFmpeg can open ({reason})",
                   "replace it with the audio file")
    want_sr = meta.get('sample_rate')
    if want_sr is not None and int(want_sr) != sample_rate:
        return bad(f"the file is at {sample_rate} Hz, the manifest says {int(want_sr)} Hz (AudioCraft would "
                   f"resample it silently to the model's rate)",
                   f"resample the file to {int(want_sr)} Hz or correct the manifest's sample_rate")
    if full:
        try:
            duration = _decode_all(path)
        except Exception as exc:  # noqa: BLE001
            return bad(f"decoding fails ({type(exc).__name__}: {exc})"[:300], "replace it with the audio file")
    want = meta.get('duration')
    if want is not None and abs(float(want) - duration) > DURATION_TOLERANCE_S:
        if duration < float(want):
            problem = (f"the file holds {duration:.2f} s of audio, the manifest says {float(want):.2f} s: it is "
                       "truncated (an interrupted write or copy) or the manifest is stale")
        else:
            problem = (f"the file holds {duration:.2f} s of audio, the manifest says {float(want):.2f} s: the "
                       "manifest is stale")
        return bad(problem, "restore the complete file or correct the manifest's duration")
    return None


def check_manifest(manifest: tp.Union[str, Path], full: bool = False) -> tp.Tuple[int, tp.List[BadFile]]:
    """Check every line of one manifest file. Returns (number of entries, bad entries)."""
    manifest = Path(manifest)
    bad: tp.List[BadFile] = []
    count = 0
    with _open_text(manifest) as fp:
        for number, text in enumerate(fp, 1):
            if not text.strip():
                continue
            count += 1
            try:
                meta = json.loads(text)
                meta['path']
            except (ValueError, KeyError, TypeError) as exc:
                bad.append(BadFile(str(manifest), number, '?', f"not a manifest line ({exc})",
                                   _fix(manifest, number, 'correct the line')))
                continue
            path = Path(meta['path'])
            if not path.is_absolute():   # AudioCraft resolves relative paths against the working directory
                meta['path'] = str(Path.cwd() / path)
            found = check_entry(meta, manifest, number, full=full)
            if found is not None:
                bad.append(found)
    return count, bad


def check_manifests(paths: tp.Iterable[tp.Union[str, Path]],
                    full: bool = False) -> tp.Tuple[int, tp.List[BadFile]]:
    """Check all manifests at or under `paths` (see `manifest_files`). Returns (entries checked, bad ones)."""
    total, bad = 0, []
    for path in paths:
        for manifest in manifest_files(path):
            count, found = check_manifest(manifest, full=full)
            total += count
            bad.extend(found)
    return total, bad


def report(bad: tp.List[BadFile]) -> str:
    """Human-readable list of bad files (one entry, then its fix, per file)."""
    if not bad:
        return "no bad files"
    head = f"{len(bad)} bad audio file{'s' if len(bad) > 1 else ''} in the manifest:"
    return head + '\n' + '\n'.join(f"  {b}" for b in bad)


def require_clean(paths: tp.Iterable[tp.Union[str, Path]], full: bool = False) -> int:
    """Raise BadManifestError listing every bad file (and its fix) under `paths`; returns the entries checked."""
    total, bad = check_manifests(paths, full=full)
    if bad:
        raise BadManifestError(bad)
    return total


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.data.check', description=__doc__.split('\n')[0])
    parser.add_argument('paths', nargs='+', help="manifest files or folders (egs/NAME or egs/NAME/SPLIT)")
    parser.add_argument('--full', action='store_true', help="decode every file to its end, not only its header")
    opts = parser.parse_args(argv)
    try:
        total, bad = check_manifests(opts.paths, full=opts.full)
    except FileNotFoundError as exc:
        print(exc)
        return 1
    print(f"{total} files checked ({'full decode' if opts.full else 'headers'}): {report(bad)}")
    return 1 if bad else 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
