"""Tests of audiocraft_mmd.metrics.visqol.PythonViSQOL (visqol-python) on 2 s clips of the embedded music.

Scale of the scores: in audio mode the SVR maps the 32 per-band NSIM means to MOS-LQO; identical signals
have NSIM = 1 in every band, so their score is the SVR's value at the all-ones vector, 4.7321 (the C++
conformance case `castanets_identity` expects exactly that). Each call costs ~0.2-0.3 s per second of
16 kHz audio on one core (resampled to 48 kHz); the whole file runs in a few seconds once visqol's Numba
kernels are in their on-disk cache (the very first run on a machine compiles them, ~15-20 s).
"""
import importlib.util
import json
import sys

import pytest
import torch

from audiocraft_mmd.metrics import PythonViSQOL

SR = 16_000
CLIP_S = 2.0
IDENTITY_MOS = 4.7321  # SVR output for all-ones NSIM (C++ ViSQOL conformance: castanets_identity)

HAS_VISQOL = importlib.util.find_spec('visqol') is not None
needs_visqol = pytest.mark.skipif(
    not HAS_VISQOL, reason="visqol-python not installed (pip install visqol-python==3.8.0 libsvm-official==3.37.0)")

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(autouse=True)
def one_numba_thread():
    """visqol's Numba kernels are parallel: keep them on one thread on shared machines."""
    try:
        import numba
    except ImportError:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


@pytest.fixture(scope='module')
def clips(embedded_music):
    """Two 2 s mono clips [1, 1, T] at 16 kHz, from two pieces of the embedded music's evaluate split."""
    import soundfile as sf
    import torchaudio
    from audiocraft_mmd.data import embedded_music as builder
    manifest = builder.manifest_dir(embedded_music) / 'evaluate' / 'data.jsonl'
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:2]
    out = []
    for entry in entries:
        sr = entry['sample_rate']
        # from 4 s in: past any leading silence of the rendering
        wav, _ = sf.read(entry['path'], dtype='float32', start=4 * sr, frames=int((CLIP_S + 0.5) * sr), always_2d=True)
        wav = torchaudio.functional.resample(torch.from_numpy(wav.T.copy()), sr, SR)[:, :int(CLIP_S * SR)]
        assert wav.std() > 0.01, f"{entry['path']}: clip is (near) silent"
        out.append(wav[None])
    return out


@pytest.fixture(scope='module')
def visqol():
    if not HAS_VISQOL:
        pytest.skip("visqol-python not installed")
    return PythonViSQOL(mode='audio')


def add_noise(x: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return x + x.std() * 10 ** (-snr_db / 20) * torch.randn(x.shape, generator=gen)


def lowpass(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    import torchaudio
    return torchaudio.functional.lowpass_biquad(x, SR, cutoff)


@needs_visqol
def test_identical_scores_top_of_scale(visqol, clips):
    # Identical inputs: NSIM is exactly 1 in every band, so only floating point separates the score from
    # the SVR's identity value; 1e-3 is far below the 0.1-1 MOS steps the degradations below produce.
    score = visqol(clips[0], clips[0], SR)
    assert isinstance(score, float)
    assert score == pytest.approx(IDENTITY_MOS, abs=1e-3)
    assert visqol.last_scores == [score]


@needs_visqol
def test_heavy_degradations_score_clearly_lower(visqol, clips):
    x = clips[0]
    noisy = visqol(x, add_noise(x, snr_db=0.), SR)          # white noise as loud as the music
    muffled = visqol(x, lowpass(x, 1000.), SR)              # 1 kHz low-pass
    # measured ~2.6-3.1 (noise) and ~2.2-2.4 (low-pass) on the embedded music: at least 1 MOS below identity
    assert noisy < IDENTITY_MOS - 1.0
    assert muffled < IDENTITY_MOS - 1.0
    assert noisy > 1.0 and muffled > 1.0  # still on the MOS scale


@needs_visqol
def test_batch_is_mean_of_single_scores(visqol, clips):
    ref = torch.cat(clips)                       # [2, 1, T]
    deg = torch.cat([add_noise(clips[0], 10.), lowpass(clips[1], 2000.)])
    batch = visqol(ref, deg, SR)
    per_item = list(visqol.last_scores)
    singles = [visqol(ref[i:i + 1], deg[i:i + 1], SR) for i in range(2)]
    assert per_item == pytest.approx(singles, abs=1e-9)       # items are scored independently
    assert batch == pytest.approx(sum(singles) / 2, abs=1e-9)
    assert abs(singles[0] - singles[1]) > 1e-3                # the mean is not trivially one of them


@needs_visqol
def test_multichannel_is_downmixed_to_mono(visqol, clips):
    stereo = torch.cat(clips, dim=1)             # [1, 2, T]: two different pieces as left / right
    deg = add_noise(stereo, 20.)
    score = visqol(stereo, deg, SR)
    mono = visqol(stereo.mean(1, keepdim=True), deg.mean(1, keepdim=True), SR)
    # equal up to the 16-bit rounding, applied per channel (as in AudioCraft's WAV files) before the mean
    assert score == pytest.approx(mono, abs=0.01)
    swapped = visqol(stereo.flip(1), deg.flip(1), SR)
    assert swapped == pytest.approx(score, abs=1e-9)


@needs_visqol
def test_resamples_to_48k_like_torchaudio(visqol, clips):
    import torchaudio
    ref, deg = clips[0], lowpass(clips[0], 3000.)
    up = torchaudio.transforms.Resample(SR, 48_000)
    assert visqol(ref, deg, SR) == pytest.approx(visqol(up(ref), up(deg), 48_000), abs=1e-9)


@needs_visqol
def test_speech_mode(clips):
    speech = PythonViSQOL(mode='speech', use_lattice_model=False)  # polynomial mapping, scaled to max 5
    assert speech.target_sr == 16_000
    x = clips[0]
    assert speech(x, x, SR) == pytest.approx(5.0, abs=1e-3)
    assert speech(x, add_noise(x, 0.), SR) < 4.5


@needs_visqol
def test_models(clips):
    # AudioCraft's configured model name is the file visqol-python bundles: same scores as the default
    x, deg = clips[0], add_noise(clips[0], 10.)
    default = PythonViSQOL()
    aliased = PythonViSQOL(model='tcdaudio14_aacvopus_coresv_svrnsim_n.68_g.01_c1.model')
    assert aliased.model_path is None
    assert aliased(x, deg, SR) == pytest.approx(default(x, deg, SR), abs=1e-12)
    with pytest.raises(FileNotFoundError, match='not found'):
        PythonViSQOL(model='/nonexistent/model.txt')


def test_bad_arguments():
    with pytest.raises(ValueError, match='mode'):
        PythonViSQOL(mode='music')
    with pytest.raises(ValueError, match='binary'):
        PythonViSQOL(bin='/opt/visqol')


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, 'visqol', None)   # `import visqol` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install visqol-python==3\.8\.0 libsvm-official==3\.37\.0'):
        PythonViSQOL()
    with pytest.raises(ImportError, match='make install'):
        PythonViSQOL(mode='speech')


def test_too_short_clips_get_an_error_that_names_the_fix():
    visqol = PythonViSQOL(mode='audio')
    clip = torch.zeros(1, 1, 8000)  # 0.5 s at 16 kHz: visqol-python itself fails below ~1 s in audio mode
    with pytest.raises(ValueError, match='segment_duration'):
        visqol(clip, clip, 16000)
