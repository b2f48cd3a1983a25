"""Export a trained tokenizer for plain AudioCraft: `python -m audiocraft_mmd.export SIG OUT_DIR`.

Writes `OUT_DIR/compression_state_dict.bin` with AudioCraft's own `export_encodec`, which loads anywhere with
`audiocraft.models.CompressionModel.get_pretrained('OUT_DIR/compression_state_dict.bin')` (no need for this
package), and is the file MusicGen's `get_pretrained(OUT_DIR)` looks for next to an exported LM.
On torch >= 2.6 plain AudioCraft needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to read AudioCraft checkpoints.
"""
import argparse
from pathlib import Path
import sys
import typing as tp

from . import env


def resolve_checkpoint(sig_or_path: str) -> Path:
    """Checkpoint file of an XP signature (in this package's Dora folder), an XP folder, or a checkpoint path.

    Args:
        sig_or_path (str): e.g. '3f2a9c1b', '//sig/3f2a9c1b', 'outputs/xps/3f2a9c1b' or a `.th` file.
    Returns:
        Path of the checkpoint file.
    """
    from audiocraft.utils.checkpoint import resolve_checkpoint_path
    text = str(sig_or_path)
    is_sig = not text.startswith('//') and '/' not in text and not Path(text).exists()
    resolved = resolve_checkpoint_path(f'//sig/{text}' if is_sig else text)
    if resolved is None:
        raise FileNotFoundError(f"No checkpoint for {text!r} (looked in {env.dora_dir() / 'xps'}): train it first "
                                "with `dora run ...`, or pass the path of a checkpoint.th.")
    return resolved


def export_tokenizer(sig_or_path: str, out_dir: tp.Union[str, Path]) -> Path:
    """Export the best state of a compression XP to `out_dir/compression_state_dict.bin`.

    Args:
        sig_or_path (str): XP signature or checkpoint path (see `resolve_checkpoint`).
        out_dir (str or Path): output folder, created if needed.
    Returns:
        Path of the exported file.
    """
    from audiocraft.utils.export import export_encodec
    out_file = Path(out_dir) / 'compression_state_dict.bin'
    return Path(export_encodec(resolve_checkpoint(sig_or_path), out_file))


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.export', description=__doc__.split('\n')[0])
    parser.add_argument('sig', help="XP signature or checkpoint path of a compression XP")
    parser.add_argument('out_dir', help="folder to write compression_state_dict.bin into")
    opts = parser.parse_args(argv)
    print(export_tokenizer(opts.sig, opts.out_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
