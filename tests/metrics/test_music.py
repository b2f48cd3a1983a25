"""The demo's music statistics tell notes from a drone on clips whose answer is known by construction."""
import math

import numpy as np
import pytest

from audiocraft_mmd.metrics.music import music_statistics

SR = 16000


def _tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq * t)


def test_a_held_chord_has_no_onsets_and_a_scale_has_one_per_note():
    rng = np.random.default_rng(0)
    chord = sum(_tone(f, 4.) for f in (220., 277.2, 329.6)) / 3 + 0.01 * rng.standard_normal(4 * SR)
    scale = np.concatenate([_tone(f, 0.25) * np.exp(-6 * np.arange(SR // 4) / SR)
                            for f in [262., 294., 330., 349., 392., 440., 494., 523.] * 2])
    held, notes = music_statistics(chord, SR), music_statistics(scale, SR)
    # 16 notes in 4 s: 4/s; the detector may merge or miss one or two at the edges (tolerance 1/s)
    assert held['onsets_per_s'] <= 0.25 and notes['onsets_per_s'] == pytest.approx(4., abs=1.)
    # pitch-class spread: one note < a triad < a scale over 7 pitch classes <= log2(12)
    single = music_statistics(_tone(220., 4.), SR)['chroma_entropy']
    assert single < held['chroma_entropy'] < notes['chroma_entropy'] <= math.log2(12) + 1e-6


def test_stereo_is_averaged_and_empty_input_is_refused():
    mono = _tone(440., 1.)
    assert music_statistics(np.stack([mono, mono]), SR) == pytest.approx(music_statistics(mono, SR))
    with pytest.raises(ValueError, match="non-empty"):
        music_statistics(np.zeros(0), SR)
