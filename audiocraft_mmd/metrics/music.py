"""Two numbers that tell notes from a drone, for the demo's report: onset rate and chroma entropy.

- **Onset rate** (onsets per second): peaks of librosa's spectral-flux onset strength (mean rise of the mel
  log-spectrum, dB per frame) that stand ONSET_DELTA_DB above their local mean. The threshold is absolute, not
  relative to the clip's own envelope (librosa's default), so that a steady drone's small fluctuations count as
  none: on synthetic clips a held 3-note chord gives 0/s and sixteen decaying notes in 4 s give 4/s. On the
  first 30 s of training pieces: the rendered Bach chorales of the embedded set 0.2-1.5/s (legato chord changes in
  a sustained timbre are soft onsets), the real recordings 1-4/s.
- **Chroma entropy** (bits, 0 to log2(12) = 3.58): the entropy of the clip's mean chroma vector, i.e. over how many
  pitch classes the clip spreads its energy: one held note gives 1.4, a held triad 2.8, a scale 3.4. Noise also
  spreads over all twelve (3.58): read it next to the onset rate.

Both come from librosa (an AudioCraft dependency), on mono audio; they are descriptive, not quality metrics.
"""
import typing as tp

import numpy as np

__all__ = ['music_statistics', 'MUSIC_STATISTICS']

ONSET_DELTA_DB = 1.
MIN_ONSET_GAP_S = 0.1
HOP = 512
# column name -> what it measures, for reports
MUSIC_STATISTICS = {'onsets_per_s': f"onsets per second (flux peaks {ONSET_DELTA_DB:g} dB over the local mean)",
                    'chroma_entropy': "entropy of the mean chroma, bits (max log2(12) = 3.58)"}


def music_statistics(wav: np.ndarray, sample_rate: int) -> tp.Dict[str, float]:
    """Onset rate and chroma entropy of one clip.

    Args:
        wav (np.ndarray): audio, `[T]` or `[C, T]` (channels are averaged).
        sample_rate (int): its sample rate.
    Returns:
        dict: `onsets_per_s` and `chroma_entropy` (see the module docstring).
    """
    import librosa  # lazy: only the reports need it
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=0)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"expected a non-empty [T] or [C, T] clip, got shape {wav.shape}")
    duration = wav.size / sample_rate
    envelope = librosa.onset.onset_strength(y=wav, sr=sample_rate, hop_length=HOP)
    # librosa's default peak windows (30 ms) round down to 0 frames at 16 kHz, and an attack that straddles two
    # frames then counts twice: one peak per 100 ms window, at most one onset per 100 ms
    window = max(1, round(MIN_ONSET_GAP_S * sample_rate / HOP))
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate, hop_length=HOP, normalize=False,
                                        delta=ONSET_DELTA_DB, pre_max=window, post_max=window, wait=window,
                                        units='time')
    chroma = librosa.feature.chroma_stft(y=wav, sr=sample_rate).mean(axis=1)
    total = float(chroma.sum())
    if total <= 0:  # silence: no pitch class at all
        entropy = 0.
    else:
        p = chroma / total
        entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return {'onsets_per_s': len(onsets) / duration, 'chroma_entropy': entropy}

