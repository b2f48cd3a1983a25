"""XP references, and where an XP's files are: the one place that knows them (tools, solvers and grids ask here).

An XP reference, wherever one is taken (`python -m audiocraft_mmd.export REF`, `report REF...`,
`compression_model_checkpoint=REF`), is one of:

- a signature of this package's Dora folder: the 8 lower-case hex digits Dora prints (`3f2a9c1b`), or AudioCraft's
  spelling `//sig/3f2a9c1b`. A bare signature is a path instead when a file or folder of that name exists where the
  command runs (`signature` is the rule);
- an XP folder, or one of its checkpoint files (`checkpoint.th`, `checkpoint_25.th`);
- for tokenizers also: an export folder (`python -m audiocraft_mmd.export`), its `compression_state_dict.bin`, or
  AudioCraft's `//pretrained/NAME`.

Besides resolving references (checkpoints, tokenizers, a grid's XPs), this module names the files one tool leaves in
an XP's folder for another to read (exports, cross-domain evaluations, factorization results), and holds what the
tools share about XPs (which solvers are LMs, which logged metrics are negated). It imports nothing of the package
at module level but `paths` (cheap: solvers and grids import it at start); the Dora main (`train`) is imported where
a function needs the Dora folder.
"""
import hashlib
import json
import os
from pathlib import Path
import re
import sys
import typing as tp

from .paths import REPO_ROOT

LM_SOLVERS: tp.Tuple[str, ...] = ('musicgen', 'musicgen_mmd')
# AudioCraft logs `sisnr` as the NEGATED SI-SNR (a loss to minimize): tables show SI-SNR in dB.
NEGATED: tp.FrozenSet[str] = frozenset({'sisnr'})

SIG_PATTERN = re.compile(r'^[0-9a-f]{8}$')  # Dora: the first 8 hex digits of a SHA-1 of the overrides
SIG_PREFIX = '//sig/'
PRETRAINED_PREFIX = '//pretrained/'
TOKENIZER_KEY = 'compression_model_checkpoint='
EXPORTED_TOKENIZER = 'compression_state_dict.bin'  # AudioCraft's names, what MusicGen.get_pretrained(folder) reads
EXPORTED_LM = 'state_dict.bin'
EXPORT_RECORD = 'export.json'                     # this package's provenance of an export


def is_lm(cfg: tp.Any) -> bool:
    """True for an LM XP's config (a MusicGen solver), False for a tokenizer's (compression)."""
    return cfg.solver in LM_SOLVERS


def shown(key: str, value: tp.Optional[float]) -> tp.Optional[float]:
    """A logged metric as the tables show it: the NEGATED keys flipped back (None stays None)."""
    return -value if value is not None and key in NEGATED else value


def signature(reference: tp.Any) -> tp.Optional[str]:
    """The XP signature a reference names, or None if it names something else (a path, `//pretrained/...`).

    Args:
        reference: `3f2a9c1b` (not an existing file or folder where the command runs) or `//sig/3f2a9c1b`.
    Returns:
        The signature, e.g. '3f2a9c1b'.
    """
    text = str(reference)
    if text.startswith(SIG_PREFIX):
        return text[len(SIG_PREFIX):]
    if SIG_PATTERN.match(text) and not Path(text).exists():
        return text
    return None


def xps_dir() -> Path:
    """The folder holding this package's XP folders (`<Dora folder>/xps`), as the Dora main has it now."""
    from .train import main
    return Path(main.dora.dir) / 'xps'


def resolve_checkpoint(reference: tp.Any) -> Path:
    """Checkpoint file of an XP signature (in this package's Dora folder), an XP folder, or a checkpoint path.

    Args:
        reference: e.g. '3f2a9c1b', '//sig/3f2a9c1b', 'outputs/xps/3f2a9c1b' or a `.th` file.
    Returns:
        Path of the checkpoint file.
    Raises:
        FileNotFoundError: no checkpoint there (the XP did not finish an epoch, or the reference is wrong).
    """
    from audiocraft.utils.checkpoint import resolve_checkpoint_path
    sig = signature(reference)
    resolved = resolve_checkpoint_path(str(xps_dir() / sig) if sig is not None else str(reference))
    if resolved is None:
        raise FileNotFoundError(f"No checkpoint for {str(reference)!r} (looked in {xps_dir()}): train it first with "
                                "`dora run ...`, or pass the path of a checkpoint.th.")
    return resolved


def resolve_tokenizer(reference: tp.Any) -> str:
    """Turn a tokenizer reference into one AudioCraft's `CompressionSolver.model_from_checkpoint` loads.

    Args:
        reference: one of
            - an export folder holding `compression_state_dict.bin`, or that file itself;
            - an XP signature of this package (`3f2a9c1b` or `//sig/3f2a9c1b`), an XP folder, or a `checkpoint.th`;
            - `//pretrained/NAME` (AudioCraft's: a Hugging Face name needs its weights in the local cache).
    Returns:
        The reference for AudioCraft: `//pretrained/<file>` for exports, a checkpoint path otherwise.
    Raises:
        FileNotFoundError: nothing loadable there; the message names what to train or export.
    """
    from audiocraft.utils.checkpoint import resolve_checkpoint_path
    text = str(reference)
    if text.startswith(PRETRAINED_PREFIX):
        return text
    sig = signature(text)
    if sig is not None:
        if not (xps_dir() / sig).exists():
            raise FileNotFoundError(
                f"Tokenizer {text!r}: there is no XP {sig} in {xps_dir()}. Train one with `dora run "
                "solver=compression/encodec_mmd_small_v2` (its signature is printed at start), or pass an export "
                "folder (`python -m audiocraft_mmd.export SIG OUT_DIR`) as compression_model_checkpoint=OUT_DIR.")
        text = str(xps_dir() / sig)
    path = Path(text).expanduser()
    if not path.is_absolute():
        from dora import git_save
        path = Path(git_save.to_absolute_path(str(path)))
    if path.is_dir() and (path / EXPORTED_TOKENIZER).exists():
        path = path / EXPORTED_TOKENIZER
    if path.is_file() and path.name == EXPORTED_TOKENIZER:
        return f'{PRETRAINED_PREFIX}{path}'
    resolved = resolve_checkpoint_path(str(path))
    if resolved is None:
        raise FileNotFoundError(
            f"No tokenizer at compression_model_checkpoint={reference!r} ({path}): expected an export folder "
            f"holding {EXPORTED_TOKENIZER} (`python -m audiocraft_mmd.export SIG {reference}`), a compression XP "
            "signature or folder with a checkpoint.th, or //pretrained/NAME. Train a tokenizer first, e.g. "
            "`dora run solver=compression/encodec_mmd_small_v2`, or run `make demo`, which trains and exports one.")
    return str(resolved)


def state_hash(module: tp.Any) -> str:
    """SHA-1 of a module's whole state (parameters AND buffers: RVQ codebooks are buffers, which AudioCraft's
    `model_hash` leaves out): how an LM checkpoint records which tokenizer it trained on.

    Args:
        module (torch.nn.Module): e.g. a compression model.
    Returns:
        The hex digest.
    """
    hasher = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        hasher.update(key.encode())
        hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def tokenizer_ref(arg: str) -> tp.Optional[str]:
    """The tokenizer reference of a `compression_model_checkpoint=...` override, None for any other override.

    Args:
        arg (str): one command-line override, e.g. `compression_model_checkpoint="3f2a9c1b"`.
    Returns:
        The reference without quotes, e.g. '3f2a9c1b'.
    """
    return arg[len(TOKENIZER_KEY):].strip('"\'') if arg.startswith(TOKENIZER_KEY) else None


def tokenizer_xp(reference: tp.Any) -> tp.Optional[tp.Any]:
    """The XP of this Dora folder that a tokenizer reference names by signature.

    Returns:
        The `dora.XP`, or None for an export folder, a path, `//pretrained/...`, or a signature whose XP cannot be
        found here (trained elsewhere, or with configs whose defaults changed since).
    """
    sig = signature(reference)
    if sig is None:
        return None
    from .train import get_xp_from_sig
    try:
        return get_xp_from_sig(sig)
    except Exception:  # Dora's lookup fails in several ways (no such folder, no argv, a changed default)
        return None


def is_export(folder: tp.Union[str, Path]) -> bool:
    """True when `folder` holds an exported LM (`state_dict.bin`, what `MusicGen.get_pretrained(folder)` reads)."""
    return Path(folder).is_dir() and (Path(folder) / EXPORTED_LM).exists()


def export_folder(checkpoint: tp.Union[str, Path]) -> Path:
    """Where an LM checkpoint is exported for generation, next to it: `<XP folder>/export` for `checkpoint.th`,
    `<XP folder>/export_checkpoint_25` for `checkpoint_25.th` (one export per checkpoint file)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent / ('export' if checkpoint.name == 'checkpoint.th' else f'export_{checkpoint.stem}')


def read_export_record(folder: tp.Union[str, Path]) -> tp.Dict[str, tp.Any]:
    """The provenance an export folder holds (`export.json`: LM signature, tokenizer, trained segment, ...), or
    an empty dict for an export written elsewhere."""
    path = Path(folder) / EXPORT_RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def cross_domain_path(folder: tp.Union[str, Path], dset: str) -> Path:
    """Where an XP's evaluation on dataset preset `dset` is written (`python -m audiocraft_mmd.evaluate --dset`)
    and read (`report --dset`): `<folder>/evaluate_<dset, / as _>.json`.

    Args:
        folder: the XP's folder.
        dset (str): the dataset preset, e.g. `audio/real_music` (-> `evaluate_audio_real_music.json`).
    Returns:
        The path (the file holds `dset`, `sig`, `epochs`, ..., and the metrics under `evaluate`).
    """
    return Path(folder) / f"evaluate_{dset.replace('/', '_')}.json"


def factorization_path(folder: tp.Union[str, Path], epoch: tp.Optional[int] = None, rank: tp.Optional[int] = None,
                       fit: str = 'crossfit') -> Path:
    """Where `python -m audiocraft_mmd.factorization` writes an LM's diagnostic and `report` reads it.

    Args:
        folder: the LM XP's folder.
        epoch (int, optional): the diagnostic of the checkpoint of this epoch (None: the last checkpoint).
        rank (int, optional): with pairwise tables of this rank (None: full tables).
        fit (str): 'crossfit' (no suffix) or 'train'.
    Returns:
        `<folder>/factorization[_epochN][_rankR][_fittrain].json`.
    """
    return Path(folder) / ('factorization' + (f'_epoch{epoch}' if epoch else '') + (f'_rank{rank}' if rank else '')
                           + ('' if fit == 'crossfit' else f'_fit{fit}') + '.json')


def available_dsets() -> tp.List[str]:
    """The dataset presets `dset=NAME` can name: this package's `config/dset/` and AudioCraft's, without the
    abstract ones (no evaluate split, or `???`: AudioCraft's `default` files).

    Returns:
        Sorted names, e.g. ['audio/audiocaps_16khz', ..., 'audio/real_music', ...].
    """
    import yaml
    from .env import audiocraft_config_dir
    names = set()
    for root in (REPO_ROOT / 'config' / 'dset', audiocraft_config_dir() / 'dset'):
        for path in root.rglob('*.yaml'):
            try:
                evaluate = (yaml.safe_load(path.read_text()) or {}).get('datasource', {}).get('evaluate')
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if isinstance(evaluate, str) and evaluate != '???':
                names.add(path.relative_to(root).with_suffix('').as_posix())
    return sorted(names)


def check_dset(dset: str) -> None:
    """Raise ValueError naming the available presets when `dset` is not one of them (before any XP is loaded).

    Args:
        dset (str): a dataset preset name as `dset=` takes it, e.g. `audio/real_music`.
    """
    available = available_dsets()
    if dset not in available:
        raise ValueError(f"unknown dataset preset {dset!r} (--dset takes what `dset=` takes: a file under "
                         f"config/dset/ of this package or of AudioCraft, without .yaml); available: "
                         f"{', '.join(available)}")


def grid_xps(name: str) -> tp.List[tp.Any]:
    """XPs of grid `name` (module `grids.<name>` of this checkout), as `dora grid` would schedule them.

    Returns:
        The `dora.XP`s, in the grid's order.
    """
    import importlib
    from dora.explore import Herd, Launcher
    from dora.shep import Shepherd
    from .train import main
    if str(REPO_ROOT) not in sys.path:  # `grids` is a top-level package of the checkout, not installed
        sys.path.insert(0, str(REPO_ROOT))
    explorer = importlib.import_module(f'grids.{name}').explorer
    herd = Herd()
    shepherd = Shepherd(main)
    launcher = Launcher(shepherd, main.get_slurm_config(), herd)
    explorer(launcher)
    herd.complete()
    return [sheep.xp for sheep in herd.sheeps.values()]


def add_scale_arguments(parser: tp.Any) -> None:
    """`--small` / `--small_v1` on a tool's argparse parser: the grid scale (stored as `scale`, see
    `resolve_targets`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--small', dest='scale', action='store_const', const='small',
                       help="the grid's small scale: encodec_mmd_small_v2 (AUDIOCRAFT_MMD_GRID_SCALE=small)")
    group.add_argument('--small_v1', dest='scale', action='store_const', const='small_v1',
                       help="the small scale of the older tables: encodec_mmd_small "
                       "(AUDIOCRAFT_MMD_GRID_SCALE=small_v1)")


def resolve_targets(targets: tp.Sequence[str], scale: tp.Optional[str] = None) -> tp.List[tp.Any]:
    """The XPs of a grid name (module under grids/, at the given scale) or of XP signatures.

    Args:
        targets (list of str): one grid name, or XP signatures.
        scale (str, optional): `small` or `small_v1`, the grid's scale (sets AUDIOCRAFT_MMD_GRID_SCALE for this
            process); None leaves the environment as it is (unset: the paper's scale).
    Returns:
        The `dora.XP`s.
    """
    if scale is not None:
        os.environ['AUDIOCRAFT_MMD_GRID_SCALE'] = scale
    if len(targets) == 1 and signature(targets[0]) is None:
        return grid_xps(targets[0])
    from .train import get_xp_from_sig
    return [get_xp_from_sig(signature(target) or target) for target in targets]
