"""Pieces shared by the dataset builders (`embedded_music`, `real_music`): loudness normalization, 16-bit WAV
writing, MusicGen sidecars and AudioCraft manifest lines, so both presets are normalized and serialized the same way.

Cheap to import (numpy only at module level).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
import typing as tp
import warnings

import numpy as np

SAMPLE_RATE = 32000
TARGET_LUFS = -18.0          # integrated loudness target (ITU-R BS.1770-4, see integrated_loudness)
PEAK_CEILING_DB = -1.0       # the gain is lowered further if the peak would exceed -1 dBFS
SPLITS = ('train', 'valid', 'evaluate', 'generate')
# Fraction of the data (at least one item each) held out per split.
SPLIT_FRACTIONS = {'generate': 0.05, 'evaluate': 0.07, 'valid': 0.07}


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
