"""Check an install: `python -m audiocraft_mmd.doctor`. Prints one line per check; exits 1 if one fails."""
from pathlib import Path
import sys
import typing as tp


def check_dataset(manifest_dir: tp.Union[str, Path]) -> str:
    """Open the header of every audio file the manifests under `manifest_dir` list; raise a RuntimeError that
    names each bad file and its fix (see `audiocraft_mmd.data.check`)."""
    from .data import check
    total, bad = check.check_manifests([manifest_dir])
    if bad:
        raise RuntimeError(check.report(bad))
    return f"{total} files open at the sample rate and duration their manifests say ({manifest_dir})"


def check_real_dataset(root: tp.Optional[tp.Union[str, Path]] = None) -> str:
    """The optional real-music preset (`make dataset-real`): absent is fine (a note on how to build it); if built,
    every audio file its manifests list must open (see `check_dataset`)."""
    from .data import real_music
    mdir = real_music.manifest_dir(root=root)
    if real_music.read_record(root=root) is None:
        return ("not built (optional: `make dataset-real` fetches about 350 MB of Debian game soundtracks with "
                "apt-get, 5 h of real recordings; docs/real_music.md)")
    return "real music: " + check_dataset(mdir)


def _checks() -> tp.Iterator[tp.Tuple[str, tp.Callable[[], str]]]:
    from . import env

    def torch_version() -> str:
        import torch
        import torchaudio
        return f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, cuda={torch.cuda.is_available()}"

    def audiocraft() -> str:
        config_dir = env.audiocraft_config_dir()
        import audiocraft as ac
        return f"audiocraft {ac.__version__}, configs at {config_dir}"

    def ffmpeg() -> str:
        return env.ensure_ffmpeg()

    def torchaudio_io() -> str:
        from .torchcodec_ffmpeg import check_torchaudio_io
        return check_torchaudio_io()

    def dora_main() -> str:
        from .train import main
        return f"dora main ok, outputs in {main.dora.dir}"

    def visqol() -> str:
        from .metrics.visqol import _import_visqol
        package = _import_visqol()
        from visqol.numba_accel import has_numba
        return f"visqol-python {package.__version__} ({'numba kernels' if has_numba() else 'no numba: ~8x slower'})"

    def dataset() -> str:
        from .data import common, embedded_music
        mdir = embedded_music.manifest_dir('embedded_music')
        if common.load_record(mdir) is None:
            return "not built yet (make dataset)"
        return "small set: " + check_dataset(mdir)

    yield 'torch', torch_version
    yield 'audiocraft', audiocraft
    yield 'ffmpeg', ffmpeg
    yield 'torchaudio io', torchaudio_io
    yield 'dora', dora_main
    yield 'visqol', visqol
    yield 'dataset', dataset
    yield 'real dataset', check_real_dataset


def main() -> int:
    failed = 0
    for name, check in _checks():
        try:
            print(f"[ok]   {name}: {check()}")
        except Exception as exc:  # report every check, then fail
            failed += 1
            print(f"[FAIL] {name}: {exc}")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
