"""CPU cost of PythonViSQOL (visqol-python): seconds of compute per second of audio.

Scores one real clip of the embedded music set (resampled to ``--sr``, default 16 kHz, so audio mode
upsamples it to 48 kHz as in a 16 kHz compression run) against a degraded copy (low-passed at
4 kHz + noise at ~30 dB SNR). Per duration: one warm-up call, then the median of ``--repeats``
calls. The first call of a process also loads the Numba kernels from visqol's on-disk cache (the
very first call on a machine compiles them: ~15-20 s, once); warm-up hides both.

Examples::

    NUMBA_NUM_THREADS=1 python bench/bench_visqol.py --durations 10,60
    python bench/bench_visqol.py --durations 10 --no-numba     # pure NumPy fallback of visqol-python

``--no-numba`` blocks ``import numba`` before visqol is imported (visqol then uses its NumPy code
paths, which its README says give the same scores). Set ``NUMBA_NUM_THREADS`` in the environment
(visqol's kernels are parallel). Not a test.
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--durations', default='10,60', help='clip durations in seconds, comma separated')
    parser.add_argument('--sr', type=int, default=16000, help='sample rate of the clips given to PythonViSQOL')
    parser.add_argument('--mode', default='audio', choices=['audio', 'speech'])
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--no-numba', action='store_true', help='run visqol-python without Numba')
    parser.add_argument('--wav', default=os.path.join(ROOT, 'dataset', 'embedded_music', 'evaluate',
                                                      'bach_bwv415.wav'), help='source audio (>= longest duration)')
    args = parser.parse_args()
    if args.no_numba:
        sys.modules['numba'] = None  # type: ignore[assignment]  # `import numba` now raises ImportError

    import soundfile as sf
    import torch
    import torchaudio
    torch.set_num_threads(1)
    from audiocraft_mmd.metrics import PythonViSQOL
    from visqol.numba_accel import has_numba

    wav, file_sr = sf.read(args.wav, dtype='float32', always_2d=True)
    wav = torchaudio.functional.resample(torch.from_numpy(wav.T.copy()), file_sr, args.sr)[None]  # [1, C, T]
    gen = torch.Generator().manual_seed(0)
    visqol = PythonViSQOL(mode=args.mode)
    rows = []
    for duration in [float(d) for d in args.durations.split(',')]:
        n = int(duration * args.sr)
        assert wav.shape[-1] >= n, f"{args.wav} is shorter than {duration} s"
        ref = wav[..., :n]
        deg = torchaudio.functional.lowpass_biquad(ref, args.sr, 4000.)
        deg = deg + 0.03 * ref.std() * torch.randn(ref.shape, generator=gen)
        t0 = time.perf_counter()
        score = visqol(ref, deg, args.sr)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            visqol(ref, deg, args.sr)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append(dict(duration_s=duration, sr=args.sr, mode=args.mode, numba=has_numba(),
                         numba_threads=os.environ.get('NUMBA_NUM_THREADS', 'default'), moslqo=round(score, 4),
                         first_call_s=round(first, 2), median_s=round(med, 2),
                         s_per_audio_s=round(med / duration, 3)))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == '__main__':
    main()
