"""Export an XP for plain AudioCraft: `python -m audiocraft_mmd.export SIG OUT_DIR`.

- A compression XP (tokenizer) gives `OUT_DIR/compression_state_dict.bin` (AudioCraft's own `export_encodec`), which
  loads anywhere with `CompressionModel.get_pretrained('OUT_DIR/compression_state_dict.bin')`.
- An LM XP (`musicgen_mmd`, or AudioCraft's `musicgen`) gives a folder that AudioCraft loads with
  `MusicGen.get_pretrained('OUT_DIR')`, in a process that never imports this package: `state_dict.bin` (the LM,
  AudioCraft's `export_lm`), `compression_state_dict.bin` (its tokenizer) and `export.json` (provenance).

AudioCraft takes a MusicGen's longest one-window generation (`max_duration`) from the LM's training segment and
asserts that its extension stride (18 s) is shorter: an LM trained on 4 s segments would not load. The export
writes `dataset.segment_duration = --max_duration` (default 30 s, MusicGen's own) into the exported LM config and
keeps the real training segment in `export.json`. The LM's sinusoidal positions run at any length, but an LM
trained on short segments has never seen longer contexts: `python -m audiocraft_mmd.generate` warns beyond it.
On torch >= 2.6 plain AudioCraft needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to read AudioCraft checkpoints.
"""
import argparse
import json
import os
from pathlib import Path
import shutil
import sys
import tempfile
import typing as tp

from . import env  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before AudioCraft checkpoints load)
from .xps import (EXPORTED_LM, EXPORTED_TOKENIZER, EXPORT_RECORD, LM_SOLVERS, PRETRAINED_PREFIX, export_folder,
                  is_export, is_lm, resolve_checkpoint, resolve_tokenizer, state_hash, xps_dir)

EXTEND_STRIDE = 18.  # MusicGen.set_generation_params' default, asserted below max_duration when a MusicGen is built


def export_tokenizer(sig_or_path: str, out_dir: tp.Union[str, Path]) -> Path:
    """Export the best state of a compression XP to `out_dir/compression_state_dict.bin`.

    Args:
        sig_or_path (str): XP signature or checkpoint path (see `xps.resolve_checkpoint`).
        out_dir (str or Path): output folder, created if needed.
    Returns:
        Path of the exported file.
    """
    return _export_tokenizer(resolve_checkpoint(sig_or_path), out_dir)


def _export_tokenizer(checkpoint: Path, out_dir: tp.Union[str, Path]) -> Path:
    from audiocraft.utils.export import export_encodec
    with _staging(out_dir) as staging:
        export_encodec(checkpoint, staging / EXPORTED_TOKENIZER)
    return Path(out_dir) / EXPORTED_TOKENIZER


def export_musicgen(sig_or_path: str, out_dir: tp.Union[str, Path], max_duration: float = 30.,
                    package: tp.Optional[dict] = None) -> Path:
    """Export an LM XP and its tokenizer as one folder for `MusicGen.get_pretrained(out_dir)`.

    Args:
        sig_or_path (str): LM XP signature, XP folder or checkpoint path.
        out_dir (str or Path): output folder, created if needed; files already there are replaced only once the
            whole export succeeded.
        max_duration (float): the exported model's one-window generation length in seconds (> 18, see above).
        package (dict, optional): the checkpoint, if the caller loaded it already.
    Returns:
        The export folder.
    """
    return _export_musicgen(resolve_checkpoint(sig_or_path), out_dir, max_duration, package, name=sig_or_path)


def _export_musicgen(checkpoint: Path, out_dir: tp.Union[str, Path], max_duration: float = 30.,
                     package: tp.Optional[dict] = None, name: tp.Optional[str] = None) -> Path:
    """`export_musicgen` of a resolved checkpoint file (`name`: how the user named the LM, for the messages)."""
    import torch
    from omegaconf import OmegaConf
    from audiocraft.models import CompressionModel
    from audiocraft.models.builders import get_wrapped_compression_model
    from audiocraft.utils.export import export_encodec, export_lm, export_pretrained_compression_model
    name = str(checkpoint) if name is None else name
    if max_duration <= EXTEND_STRIDE:
        raise ValueError(f"--max_duration {max_duration:g} must be above {EXTEND_STRIDE:g} s: AudioCraft's MusicGen "
                         "asserts that its extension stride (18 s) is shorter than the model's max duration.")
    if package is None:
        package = torch.load(checkpoint, map_location='cpu', weights_only=False)
    cfg = package['xp.cfg']
    if not is_lm(cfg):
        raise ValueError(f"{name} is a {cfg.solver!r} XP, not an LM: export a tokenizer with "
                         f"export_tokenizer, or pass an LM XP ({', '.join(LM_SOLVERS)}).")
    reference = str(package.get('tokenizer', {}).get('reference') or cfg.compression_model_checkpoint)
    tokenizer = resolve_tokenizer(reference)
    trained_segment = float(cfg.dataset.segment_duration)
    with _staging(out_dir) as staging:
        tokenizer_file = staging / EXPORTED_TOKENIZER
        if tokenizer.startswith(PRETRAINED_PREFIX):
            # an export file is copied whole; a hub name is written as a reference (AudioCraft fetches it)
            export_pretrained_compression_model(tokenizer[len(PRETRAINED_PREFIX):], tokenizer_file)
        else:
            export_encodec(tokenizer, tokenizer_file)
        saved_hash = package.get('tokenizer', {}).get('hash')
        if saved_hash is not None and 'best_state' in torch.load(tokenizer_file, map_location='cpu',
                                                                 weights_only=False):
            exported = get_wrapped_compression_model(
                CompressionModel.get_pretrained(str(tokenizer_file), device='cpu'), cfg)
            if state_hash(exported) != saved_hash:
                raise RuntimeError(f"The tokenizer at {reference!r} is not the one LM {name} was trained on "
                                   "(its weights changed since): export the LM with the tokenizer it trained on.")
        check_exportable_lm(cfg, CompressionModel.get_pretrained(str(tokenizer_file), device='cpu'), name)
        lm_file = staging / EXPORTED_LM
        export_lm(checkpoint, lm_file)
        lm_package = torch.load(lm_file, map_location='cpu', weights_only=False)
        lm_cfg = OmegaConf.create(lm_package['xp.cfg'])
        lm_cfg.dataset.segment_duration = max(trained_segment, float(max_duration))
        lm_package['xp.cfg'] = OmegaConf.to_yaml(lm_cfg)
        torch.save(lm_package, lm_file)
        (staging / EXPORT_RECORD).write_text(json.dumps({
            'lm_checkpoint': str(checkpoint), 'lm_sig': package.get('xp.sig'), 'tokenizer': reference,
            'trained_segment_duration': trained_segment, 'max_duration': lm_cfg.dataset.segment_duration,
            'epochs_trained': len(package.get('history', [])), 'codebooks_pattern': cfg.codebooks_pattern.modeling,
            'sample_rate': int(cfg.sample_rate)}, indent=1))
    return Path(out_dir)


MUSICGEN_TOP_K = 250  # MusicGen.set_generation_params' default top_k


def check_exportable_lm(cfg: tp.Any, tokenizer: tp.Any, name: str) -> None:
    """Refuse an LM whose export plain MusicGen would run wrongly; warn about defaults it cannot sample with.

    Args:
        cfg: the LM XP's config.
        tokenizer: the exported tokenizer, as `CompressionModel.get_pretrained` loads it.
        name (str): how the user named the LM (for the messages).
    Raises:
        ValueError: the LM models fewer codebooks than its tokenizer gives (`compression_model_n_q`), which
            `MusicGen.get_pretrained` never applies: its generation would feed the LM every codebook.
    """
    import warnings
    n_q = cfg.get('compression_model_n_q')
    if n_q is not None and int(n_q) < tokenizer.num_codebooks:
        raise ValueError(
            f"LM {name} was trained on the first {n_q} of its tokenizer's {tokenizer.num_codebooks} codebooks "
            f"(compression_model_n_q={n_q}), which MusicGen.get_pretrained does not apply: the exported folder would "
            "hand the LM all of them (prompted generation fails). Nothing was exported. Train the LM on a tokenizer "
            f"with {n_q} codebooks (e.g. a compression XP with rvq.n_q={n_q}), or without compression_model_n_q.")
    card = int(cfg.transformer_lm.card)
    if card < MUSICGEN_TOP_K:
        warnings.warn(
            f"LM {name} samples from {card} codes per codebook, fewer than MusicGen's default top_k="
            f"{MUSICGEN_TOP_K}: plain MusicGen.generate on this export fails with 'selected index k out of range' "
            f"unless you call model.set_generation_params(top_k={card}) (or lower) first. "
            "`python -m audiocraft_mmd.generate` caps top_k at the codebook size.", stacklevel=3)


class _staging:
    """Write an export into a temporary folder next to `out_dir`, then move each file in: a failed export leaves
    `out_dir` as it was."""

    def __init__(self, out_dir: tp.Union[str, Path]):
        self.out_dir = Path(out_dir)

    def __enter__(self) -> Path:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f'.{self.out_dir.name}.', dir=self.out_dir.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                for item in self.tmp.iterdir():
                    os.replace(item, self.out_dir / item.name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def export(sig_or_path: str, out_dir: tp.Union[str, Path], max_duration: float = 30.) -> Path:
    """Export a compression XP (tokenizer file) or an LM XP (MusicGen folder), whichever `sig_or_path` is.

    Returns:
        The exported tokenizer file, or the exported MusicGen folder.
    """
    import torch
    checkpoint = resolve_checkpoint(sig_or_path)
    package = torch.load(checkpoint, map_location='cpu', weights_only=False)
    if is_lm(package['xp.cfg']):
        return _export_musicgen(checkpoint, out_dir, max_duration=max_duration, package=package, name=sig_or_path)
    del package
    return _export_tokenizer(checkpoint, out_dir)


def resolve_model(model: str) -> Path:
    """The export folder of `model`: an export folder as given, or an LM XP exported into its folder first
    (`xps.export_folder`: `<XP folder>/export`, again whenever the checkpoint is newer than its export).

    Args:
        model (str): export folder, LM XP signature, XP folder or checkpoint path.
    Returns:
        A folder holding `state_dict.bin` and `compression_state_dict.bin`.
    """
    path = Path(model)
    if is_export(path):
        if not (path / EXPORTED_TOKENIZER).exists():
            raise FileNotFoundError(f"{path} holds an LM ({EXPORTED_LM}) but no {EXPORTED_TOKENIZER}: export "
                                    "it with `python -m audiocraft_mmd.export LM_SIG OUT_DIR`, which writes both.")
        return path
    try:
        checkpoint = resolve_checkpoint(model)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{model!r} is neither an export folder ({EXPORTED_LM} + {EXPORTED_TOKENIZER}) nor an LM XP with "
            f"a checkpoint (looked in {xps_dir()}): train one with `dora run "
            "solver=musicgen/musicgen_mmd_small`, or export one with `python -m audiocraft_mmd.export`.") from None
    folder = export_folder(checkpoint)
    exported = folder / EXPORTED_LM
    if not exported.exists() or exported.stat().st_mtime < checkpoint.stat().st_mtime:
        _export_musicgen(checkpoint, folder, name=model)
    return folder


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.export', description=__doc__.split('\n')[0])
    parser.add_argument('sig', help="XP signature, XP folder or checkpoint path of a compression or LM XP")
    parser.add_argument('out_dir', help="folder to write the export into")
    parser.add_argument('--max_duration', type=float, default=30.,
                        help="LM exports: one-window generation length in seconds (> 18; default 30)")
    opts = parser.parse_args(argv)
    print(export(opts.sig, opts.out_dir, max_duration=opts.max_duration))
    return 0


if __name__ == '__main__':
    sys.exit(main())
