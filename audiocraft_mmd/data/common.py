"""Pieces shared by the dataset builders (`embedded_music`, `real_music`) and the checker (`check`): where a dataset
lives, its build record, and loudness normalization, 16-bit WAV writing, MusicGen sidecars and AudioCraft manifest
lines, so both presets are found, normalized and serialized the same way.

A dataset NAME built under ROOT (default: the repository) has its audio in `ROOT/dataset/NAME/<split>/` and its
manifests and build record in `ROOT/egs/NAME/`. Every function taking both takes (name, root) in that order. The
record holds, besides what each builder keeps there, `builder_version`, `config` and `rebuild`: the command line
that builds the dataset again (None where only the Python API can), which `check` names as the fix for a bad file.

Cheap to import (numpy only at module level).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
import shlex
import typing as tp
import warnings

import numpy as np

from ..paths import REPO_ROOT

SAMPLE_RATE = 32000
TARGET_LUFS = -18.0          # integrated loudness target (ITU-R BS.1770-4, see integrated_loudness)
PEAK_CEILING_DB = -1.0       # the gain is lowered further if the peak would exceed -1 dBFS
SPLITS = ('train', 'valid', 'evaluate', 'generate')
# Fraction of the data (at least one item each) held out per split.
SPLIT_FRACTIONS = {'generate': 0.05, 'evaluate': 0.07, 'valid': 0.07}
RECORD = 'build_record.json'
# Names of the record in builds made before both builders shared one (the embedded builder's): read, never written.
LEGACY_RECORDS = ('build_info.json',)


def dataset_root(root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """The folder holding `dataset/` and `egs/`: `root` (absolute), or the repository."""
    return Path(root).resolve() if root is not None else REPO_ROOT


def _checked_name(name: str) -> str:
    # (name, root) is one order for every builder: a folder given first would silently name another dataset
    if not isinstance(name, str) or not name or '/' in name or os.sep in name:
        raise TypeError(f"dataset name {name!r}: give a name such as 'real_music' (and a folder as root=...)")
    return name


def manifest_dir(name: str, root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding `<split>/data.jsonl` and the build record: `<root>/egs/<name>`.

    Args:
        name (str): dataset name, e.g. 'embedded_music'.
        root (str or Path, optional): see `dataset_root`.
    """
    return dataset_root(root) / 'egs' / _checked_name(name)


def audio_dir(name: str, root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding `<split>/<item>.wav|.json` (and what a builder adds there): `<root>/dataset/<name>`.

    Args:
        name (str): dataset name.
        root (str or Path, optional): see `dataset_root`.
    """
    return dataset_root(root) / 'dataset' / _checked_name(name)


def load_record(folder: tp.Union[str, Path]) -> tp.Optional[dict]:
    """The build record in a manifest folder (`egs/<name>`), under its name or a legacy one.

    Returns:
        The record, or None if there is none (or it cannot be read: a build that did not complete).
    """
    for filename in (RECORD,) + LEGACY_RECORDS:
        try:
            return json.loads((Path(folder) / filename).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return None
    return None


def read_record(name: str, root: tp.Optional[tp.Union[str, Path]] = None) -> tp.Optional[dict]:
    """The build record of dataset `name` under `root` (see `load_record`)."""
    return load_record(manifest_dir(name, root))


def write_record(folder: tp.Union[str, Path], record: dict) -> Path:
    """Write a build record into a manifest folder, atomically (a reader never sees a partial record)."""
    return write_text_atomic(Path(folder) / RECORD, json.dumps(record, indent=1) + '\n')


def is_built(name: str, root: tp.Optional[tp.Union[str, Path]] = None, builder_version: tp.Optional[int] = None,
             config: tp.Optional[dict] = None) -> bool:
    """Cheap check (no checksums) that a complete build exists: a record, the 4 manifests, every file they list
    present, and no manifest empty unless the record lists its split in `empty_splits`.

    Args:
        name (str): dataset name.
        root (str or Path, optional): see `dataset_root`.
        builder_version (int, optional): the record must be of this builder version.
        config (dict, optional): the record's build config must be this one.
    """
    record = read_record(name, root)
    if record is None or (builder_version is not None and record.get('builder_version') != builder_version):
        return False
    if config is not None and record.get('config') != config:
        return False
    allowed_empty = set(record.get('empty_splits', []))
    for split in SPLITS:
        manifest = manifest_dir(name, root) / split / 'data.jsonl'
        try:
            lines = [ln for ln in manifest.read_text().splitlines() if ln.strip()]
            if not lines and split not in allowed_empty:
                return False
            if not all(Path(json.loads(ln)['path']).exists() for ln in lines):
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def command(module: str, args: tp.Sequence[str]) -> str:
    """The shell command `python -m module args...`, quoted where needed (for a record's `rebuild`)."""
    return shlex.join(['python', '-m', module, *args])


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process and Python version (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest()[:8], 'big')


def integrated_loudness(wav: np.ndarray, sr: int) -> float:
    """ITU-R BS.1770-4 integrated loudness (LUFS) of a mono signal: ``pyloudnorm.Meter(sr)`` (K-weighting,
    400 ms blocks with 75 % overlap, -70 LUFS absolute and -10 LU relative gates); -inf for silence or
    audio shorter than one block."""
    import pyloudnorm
    x = np.asarray(wav, dtype=np.float64)
    if len(x) < int(0.4 * sr):
        return float('-inf')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # pyloudnorm warns on silent blocks (log of 0, mean of nothing)
        return float(pyloudnorm.Meter(sr).integrated_loudness(x))


def loudness_normalize(wav: np.ndarray, sr: int) -> tp.Tuple[np.ndarray, float, float]:
    """Gain to TARGET_LUFS, lowered if needed so that the peak stays at or below PEAK_CEILING_DB.

    Args:
        wav: mono float32 waveform.
        sr: its sample rate.
    Returns:
        (normalized float32 waveform, its integrated loudness in LUFS, the gain applied in dB).
    Raises:
        ValueError: the audio is silent (no block above the -70 LUFS gate).
    """
    lufs = integrated_loudness(wav, sr)
    if not math.isfinite(lufs):
        raise ValueError('rendered audio is silent')
    gain_db = TARGET_LUFS - lufs
    peak = float(np.abs(wav).max())
    ceiling = 10 ** (PEAK_CEILING_DB / 20)
    if peak * 10 ** (gain_db / 20) > ceiling:
        gain_db = 20 * math.log10(ceiling / peak)
    return wav * np.float32(10 ** (gain_db / 20)), lufs + gain_db, gain_db


def write_wav_pcm16(path: tp.Union[str, Path], wav: np.ndarray, sr: int) -> tp.Tuple[int, float]:
    """Write a float waveform in [-1, 1] as 16-bit PCM WAV (exact, compact; AudioCraft reads it via `audio_read`).

    Returns:
        (number of frames, peak amplitude of the written samples in [0, 1], as the manifest's `amplitude`).
    """
    import soundfile as sf
    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, sr, subtype='PCM_16', format='WAV')
    return int(len(pcm)), float(np.abs(pcm.astype(np.int32)).max()) / 32768.0


def write_sidecar(wav_path: tp.Union[str, Path], info: dict) -> Path:
    """MusicGen's metadata sidecar: `<audio stem>.json` next to the audio file (`MusicDataset` reads it)."""
    path = Path(wav_path).with_suffix('.json')
    path.write_text(json.dumps(info, indent=1, ensure_ascii=False) + '\n')
    return path


def manifest_entry(path: tp.Union[str, Path], duration: float, sample_rate: int, amplitude: float) -> dict:
    """One manifest line, with the key order and values of `audiocraft.data.audio_dataset.save_audio_meta`."""
    return dict(path=str(path), duration=duration, sample_rate=sample_rate, amplitude=amplitude, weight=None,
                info_path=None)


def write_manifest(path: tp.Union[str, Path], entries: tp.Iterable[dict]) -> Path:
    """Write an AudioCraft manifest (`data.jsonl`: one `json.dumps(AudioMeta.to_dict())` per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as fp:
        for entry in entries:
            fp.write(json.dumps(entry) + '\n')
    return path


def write_text_atomic(path: tp.Union[str, Path], text: str) -> Path:
    """Write a text file so that readers see the old file or the complete new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)
    return path


def sha256_file(path: tp.Union[str, Path], block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, 'rb') as fp:
        for chunk in iter(lambda: fp.read(block), b''):
            h.update(chunk)
    return h.hexdigest()
