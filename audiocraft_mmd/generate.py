"""Generate music with AudioCraft's MusicGen API: `python -m audiocraft_mmd.generate MODEL --descriptions ...`.

MODEL is a folder written by `python -m audiocraft_mmd.export` (what `MusicGen.get_pretrained(folder)` reads), or an
LM XP's signature / folder, exported first into `<XP folder>/export` (again whenever its checkpoint is newer), or one
of its checkpoint files (`checkpoint_25.th`: exported into `<XP folder>/export_checkpoint_25`).
Each clip is written with AudioCraft's `audio_write` (loudness-normalized wav), with a `.json` beside it holding
the description, seed and every generation setting, so that a clip can be made again:

    python -m audiocraft_mmd.generate exports/my_musicgen \\
        --descriptions "A Bach chorale for pipe organ in F major, 4 voices, moderate tempo." --duration 5 --out samples/

The same thing with the MusicGen API (no need for this package once exported):

    from audiocraft.models import MusicGen
    model = MusicGen.get_pretrained("exports/my_musicgen", device="cpu")
    model.set_generation_params(duration=5, top_k=250)
    wav = model.generate(['A Bach chorale for pipe organ in F major, 4 voices, moderate tempo.'], progress=True)
"""
import argparse
import json
from pathlib import Path
import re
import sys
import time
import typing as tp

from . import env
from .export import resolve_model
from .xps import read_export_record


def _slug(text: str, length: int = 40) -> str:
    return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')[:length] or 'clip'


def sample(musicgen: tp.Any, descriptions: tp.Sequence[str], duration: float, seed: int = 0,
           top_k: tp.Optional[int] = None, top_p: float = 0., temperature: float = 1., cfg_coef: float = 3.,
           progress: bool = True) -> tp.Tuple[tp.Any, tp.Dict[str, tp.Any], float]:
    """Sample one clip per description from a loaded `MusicGen` (what `generate` does between loading and writing).

    Returns:
        The audio [B, C, T], the generation settings, and the wall seconds the generation took.
    """
    import torch
    card = musicgen.lm.card
    if top_k is None:
        top_k = min(250, card)
    elif top_k > card:
        raise ValueError(f"--top_k {top_k} is above the codebook size {card}: use at most {card}.")
    settings = dict(duration=duration, top_k=top_k, top_p=top_p, temperature=temperature, cfg_coef=cfg_coef)
    musicgen.set_generation_params(use_sampling=True, **settings)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(unit='step', desc='generating')

        def on_step(generated: int, total: int) -> None:
            bar.total = total
            bar.update(generated - bar.n)
    musicgen.set_custom_progress_callback(on_step if progress else None)
    torch.manual_seed(seed)
    start = time.time()
    wavs = musicgen.generate(list(descriptions), progress=progress)
    elapsed = time.time() - start
    if bar is not None:
        bar.close()
    return wavs, settings, elapsed


def generate(model: str, descriptions: tp.Sequence[str], duration: float, out_dir: tp.Union[str, Path],
             seed: int = 0, top_k: tp.Optional[int] = None, top_p: float = 0., temperature: float = 1.,
             cfg_coef: float = 3., extend: bool = False, device: tp.Optional[str] = None,
             progress: bool = True) -> tp.List[Path]:
    """Generate one clip per description with `MusicGen.get_pretrained` and write them to `out_dir`.

    Args:
        model (str): export folder or LM XP (see `export.resolve_model`).
        descriptions (list of str): one clip per description (non-empty).
        duration (float): seconds per clip; above the model's `max_duration` only with `extend`.
        out_dir (str or Path): folder for the clips and their `.json` settings.
        seed (int): torch seed set before generating (same seed, settings and device: same clips).
        top_k (int, optional): sampling top-k; None = MusicGen's 250, capped at the codebook size.
        top_p, temperature, cfg_coef: MusicGen's sampling settings (top_p 0 = top-k sampling).
        extend (bool): allow durations above `max_duration` through AudioCraft's windowed extension.
        device (str, optional): default cuda when available, else cpu.
        progress (bool): show a progress bar over the generation steps.
    Returns:
        Paths of the written audio files.
    """
    import torch
    descriptions = list(descriptions)
    if not descriptions or any(not d.strip() for d in descriptions):
        raise ValueError("--descriptions needs at least one non-empty description, e.g. --descriptions "
                         "\"A Bach chorale for pipe organ in F major, 4 voices, moderate tempo.\"")
    if duration <= 0:
        raise ValueError(f"--duration {duration:g}: give a positive number of seconds.")
    env.ensure_ffmpeg()  # audio_write pipes every file through it
    folder = resolve_model(model)
    provenance = read_export_record(folder)
    from audiocraft.data.audio import audio_write
    from audiocraft.models import MusicGen
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    musicgen = MusicGen.get_pretrained(str(folder), device=device)
    if duration > musicgen.max_duration and not extend:
        raise ValueError(
            f"--duration {duration:g} s is above what {folder} generates in one window ({musicgen.max_duration:g} s): "
            "pass --extend to continue it window by window (AudioCraft's extension, 18 s stride), or export with "
            "a larger `python -m audiocraft_mmd.export --max_duration`.")
    trained = provenance.get('trained_segment_duration')
    if trained is not None and duration > trained:
        print(f"note: the LM trained on {trained:g} s segments; {duration:g} s goes beyond any context it has seen.",
              file=sys.stderr)
    wavs, settings, elapsed = sample(musicgen, descriptions, duration, seed=seed, top_k=top_k, top_p=top_p,
                                     temperature=temperature, cfg_coef=cfg_coef, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (description, wav) in enumerate(zip(descriptions, wavs)):
        stem = out_dir / f'{index:02d}_{_slug(description)}_seed{seed}'
        path = audio_write(stem, wav.cpu(), musicgen.sample_rate, strategy='loudness', loudness_compressor=True)
        stem.with_suffix('.json').write_text(json.dumps({
            'description': description, 'seed': seed, 'batch_index': index, 'model': str(folder),
            'device': device, 'sample_rate': musicgen.sample_rate, 'generation_seconds': round(elapsed, 3),
            **settings, 'export': provenance}, indent=1))
        written.append(Path(path))
    return written


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.generate', description=__doc__.split('\n')[0])
    parser.add_argument('model', help="export folder, or LM XP signature / folder")
    parser.add_argument('--descriptions', nargs='+', required=True, help="one clip per description")
    parser.add_argument('--duration', type=float, default=5., help="seconds per clip (default 5)")
    parser.add_argument('--out', required=True, help="output folder")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--top_k', type=int, default=None, help="default: 250, capped at the codebook size")
    parser.add_argument('--top_p', type=float, default=0.)
    parser.add_argument('--temperature', type=float, default=1.)
    parser.add_argument('--cfg_coef', type=float, default=3., help="classifier-free guidance (MusicGen's 3)")
    parser.add_argument('--extend', action='store_true', help="allow durations above the model's max_duration")
    parser.add_argument('--device', default=None, help="default: cuda when available, else cpu")
    opts = parser.parse_args(argv)
    paths = generate(opts.model, opts.descriptions, opts.duration, opts.out, seed=opts.seed, top_k=opts.top_k,
                     top_p=opts.top_p, temperature=opts.temperature, cfg_coef=opts.cfg_coef, extend=opts.extend,
                     device=opts.device)
    for path in paths:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
