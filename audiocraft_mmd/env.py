"""Runtime environment of audiocraft_mmd: where things are, sensible defaults, and clear errors naming the fix.

Importing this module sets three process defaults that AudioCraft needs on a laptop-sized setup and that users
should not have to export by hand:
- `USER` (AudioCraft's config interpolates `${oc.env:USER}`);
- `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`: torch >= 2.6 refuses AudioCraft checkpoints under its default
  weights-only loading (they hold OmegaConf objects). The checkpoints this package loads are the user's own XPs
  and exports; set the variable to 0 beforehand to keep torch's default;
- `AUDIOCRAFT_DORA_DIR` = this package's Dora folder, so AudioCraft's own `//sig/` lookups find our XPs.
"""
import getpass
import importlib.util
import os
from pathlib import Path
import shutil
import sys
import typing as tp

from .paths import REPO_ROOT  # the one definition; `env.REPO_ROOT` stays where the tools read it

AUDIOCRAFT_TARBALL_HINT = (
    "Install AudioCraft editable from its PyPI source tarball, which is the only distribution that ships config/: "
    "`make install`, or by hand: `pip download --no-deps --no-binary :all: audiocraft==1.3.0 && "
    "tar xzf audiocraft-1.3.0.tar.gz && pip install --no-deps -e audiocraft-1.3.0`.")


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return 'audiocraft_mmd'


os.environ.setdefault('USER', _default_user())
os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def audiocraft_config_dir() -> Path:
    """Return AudioCraft's Hydra config folder, or raise a RuntimeError that says how to install it.

    Returns:
        Path of AudioCraft's `config/` folder (holding `config.yaml`).
    """
    spec = importlib.util.find_spec('audiocraft')
    if spec is None or spec.origin is None:
        raise RuntimeError("AudioCraft is not installed. " + AUDIOCRAFT_TARBALL_HINT)
    config_dir = Path(spec.origin).resolve().parent.parent / 'config'
    if not (config_dir / 'config.yaml').exists():
        raise RuntimeError(f"AudioCraft at {Path(spec.origin).parent} has no config tree ({config_dir} is missing): "
                           "it was installed from a wheel or non-editable. " + AUDIOCRAFT_TARBALL_HINT)
    return config_dir


def dora_dir() -> Path:
    """Dora's output folder: $AUDIOCRAFT_MMD_DORA_DIR, else $AUDIOCRAFT_DORA_DIR, else `outputs/` in the repo."""
    for var in ('AUDIOCRAFT_MMD_DORA_DIR', 'AUDIOCRAFT_DORA_DIR'):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser().resolve()
    return REPO_ROOT / 'outputs'


# AudioCraft resolves `//sig/SIG` (continue_from, compression_model_checkpoint, checkpoint lookup) in ITS main's
# Dora folder, read from AUDIOCRAFT_DORA_DIR when `audiocraft.train` is imported: point it at ours.
os.environ['AUDIOCRAFT_DORA_DIR'] = str(dora_dir())


def distributed_backend() -> str:
    """NCCL where a GPU exists, gloo otherwise (AudioCraft's main always asks for NCCL)."""
    import torch
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def ensure_ffmpeg() -> str:
    """Return the `ffmpeg` AudioCraft will run, putting the venv's link on PATH when the venv is not activated.

    AudioCraft's `audio_write` pipes every file it writes (.wav included) through an `ffmpeg` found on PATH.

    Returns:
        Path to the ffmpeg executable.
    """
    found = shutil.which('ffmpeg')
    if found:
        return found
    venv_bin = Path(sys.executable).parent
    if (venv_bin / 'ffmpeg').exists():
        os.environ['PATH'] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return str(venv_bin / 'ffmpeg')
    raise RuntimeError(
        "No `ffmpeg` on PATH: AudioCraft writes every audio file through it. Run `make install` (it links the "
        "binary shipped by the imageio-ffmpeg package into the venv), or link it yourself: "
        "ln -s \"$(python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')\" "
        f"{venv_bin}/ffmpeg")


def _manifest_exists(path: Path) -> bool:
    if path.is_file():
        return True
    return (path / 'data.jsonl').exists() or (path / 'data.jsonl.gz').exists()


def check_datasource(cfg: tp.Any) -> None:
    """Raise FileNotFoundError naming the build command when a split's manifest is missing, and BadManifestError
    naming every bad audio file and its fix (missing, truncated, not audio, other sample rate than listed).

    AudioCraft meets a bad file only when a step reads it, mid-training, with its decoder's error or a bare
    AssertionError. The files' headers are checked here, at start: about 0.2 ms per file (8 ms for the small
    embedded set's 51 files), so 20 s for a manifest of 100k files.

    Args:
        cfg: the XP config, with absolute `datasource.<split>` paths.
    """
    missing, present = [], []
    for split in ('train', 'valid', 'evaluate', 'generate'):
        value = cfg.datasource.get(split)
        if isinstance(value, str):
            if not _manifest_exists(Path(value)):
                missing.append(f"{split}: {value}")
            elif value not in present:
                present.append(value)
    if not missing:
        from .data import check
        check.require_clean(present)
        return
    text = "Dataset manifests missing:\n  " + "\n  ".join(missing) + "\n"
    if any('embedded_music_large' in m for m in missing):
        text += "Build them with: python -m audiocraft_mmd.data.embedded_music --preset large"
    elif any('embedded_music' in m for m in missing):
        text += "Build them with: make dataset (python -m audiocraft_mmd.data.embedded_music --preset small)"
    elif any('real_music' in m for m in missing):
        text += ("Build them with: make dataset-real (python -m audiocraft_mmd.data.real_music; fetches pinned Debian "
                 "packages with apt-get), or use dset=audio/embedded_music offline")
    else:
        text += ("Write AudioCraft manifests with: python -m audiocraft.data.audio_dataset <audio_folder> "
                 "<egs/NAME/SPLIT/data.jsonl>, or pick another dset=...")
    raise FileNotFoundError(text)
