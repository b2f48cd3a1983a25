"""torchaudio.load/save (TorchCodec) run on PyAV's bundled FFmpeg after `make install`."""
import subprocess
import sys

import torch

from audiocraft_mmd import torchcodec_ffmpeg


def test_pyav_bundles_every_ffmpeg_library_torchcodec_links():
    import av
    from pathlib import Path
    libs = torchcodec_ffmpeg.pyav_ffmpeg_libs(Path(av.__file__).parent.parent / 'av.libs')
    names = {name for name, _ in libs}
    assert names == {'avutil', 'avcodec', 'avformat', 'avdevice', 'avfilter', 'swscale', 'swresample'}


def test_patching_is_idempotent():
    # in subprocesses, as make install runs it: a process must not load TorchCodec before patching it
    for _ in range(2):  # the first one patches if make install did not (a reinstalled torchcodec)
        run = subprocess.run([sys.executable, '-m', 'audiocraft_mmd.torchcodec_ffmpeg'], capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
        assert 'torchaudio.load/save work' in run.stdout
    assert '(already patched)' in run.stdout


def test_torchaudio_save_load_round_trip(tmp_path):
    import torchaudio
    assert 'torchcodec' in torchcodec_ffmpeg.check_torchaudio_io()
    wav = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    torchaudio.save(str(tmp_path / 'x.wav'), wav, 16000)
    read, sample_rate = torchaudio.load(str(tmp_path / 'x.wav'))
    assert sample_rate == 16000 and read.shape == wav.shape
    assert (read - wav).abs().max() < 1e-4  # 16-bit PCM
