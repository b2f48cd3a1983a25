"""The whole pipeline on 2 CPU cores: `python -m audiocraft_mmd.demo` (what `make demo` runs).

1. trains the small tokenizer (`compression/encodec_mmd_small_v2`, weight 1, on the demo's shorter schedule)
   through `dora run`, and exports it to `tokenizers/encodec_mmd_small` (the small LM config's default tokenizer);
2. trains the small LM on its tokens (`musicgen/musicgen_mmd_small`, delay pattern, description-conditioned);
3. exports the LM with its tokenizer into `outputs/demo/musicgen` and generates a few clips from descriptions of
   training pieces through AudioCraft's `MusicGen.get_pretrained` (`audiocraft_mmd.generate`);
4. writes `outputs/demo/REPORT.md`: both XPs' tables, the clips with two music statistics (onset rate, chroma
   entropy: `audiocraft_mmd.metrics.music`) next to those of the training pieces they were asked for, and the
   commands to do each step by hand.

Each step is an ordinary command: rerunning the demo resumes the XPs where they stopped (Dora signatures).
"""
import argparse
import json
from pathlib import Path
import subprocess
import sys
import time
import typing as tp

from . import env

# Shorter than the config's 1500 updates (the results grids keep theirs): the demo must end within 30 minutes.
TOKENIZER_ARGV = ['solver=compression/encodec_mmd_small_v2', 'optim.epochs=6']
LM_ARGV = ['solver=musicgen/musicgen_mmd_small']
NUM_CLIPS = 3
# `--quick`: the same pipeline with a few updates per XP (tests; seconds instead of minutes)
QUICK_TOKENIZER = ['optim.updates_per_epoch=5', 'optim.epochs=1', 'evaluate.metrics.visqol=false',
                   'dataset.evaluate.num_samples=2', 'dataset.evaluate.segment_duration=2']
QUICK_LM = ['optim.updates_per_epoch=5', 'optim.epochs=1', 'dataset.evaluate.num_samples=8',
            'dataset.valid.num_samples=8']


def _dora_run(argv: tp.List[str]) -> None:
    cmd = [sys.executable, '-m', 'dora', 'run'] + argv
    print('+', ' '.join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=env.REPO_ROOT)


def _training_pieces(num: int) -> tp.Dict[str, Path]:
    """Descriptions of training pieces, each with the first piece that has it: the small LM's lookup-table
    conditioner has one embedding per description it trained on (on the embedded music, one per piece); a
    description it never saw maps to an untrained one."""
    manifest = env.REPO_ROOT / 'egs' / 'embedded_music' / 'train' / 'data.jsonl'
    found: tp.Dict[str, Path] = {}
    for line in manifest.read_text().splitlines():
        path = Path(json.loads(line)['path'])
        description = json.loads(path.with_suffix('.json').read_text()).get('description')
        if description and description not in found:
            found[description] = path
        if len(found) == num:
            break
    return found


def _music_statistics(path: Path, sample_rate: int) -> tp.Dict[str, float]:
    """Onset rate and chroma entropy of an audio file, mono at the model's sample rate."""
    from audiocraft.data.audio import audio_read
    from audiocraft.data.audio_utils import convert_audio
    from .metrics.music import music_statistics
    wav, sr = audio_read(path)
    return music_statistics(convert_audio(wav, sr, sample_rate, 1)[0].numpy(), sample_rate)


def music_table(clips: tp.List[Path], pieces: tp.Dict[str, Path], sample_rate: int) -> str:
    """A markdown table: for each generated clip, its description and the music statistics of the clip and of the
    training piece with that description.

    Args:
        clips (list of Path): generated clips, each with a `.json` sidecar holding its `description`.
        pieces (dict): description -> training piece.
        sample_rate (int): the rate both are analysed at (the model's).
    Returns:
        str: the table.
    """
    from .metrics.music import MUSIC_STATISTICS
    names = list(MUSIC_STATISTICS)
    lines = ['| description | ' + ' | '.join(f'{name}: generated | {name}: training piece' for name in names) + ' |',
             '|---' * (1 + 2 * len(names)) + '|']
    for clip in clips:
        description = json.loads(clip.with_suffix('.json').read_text())['description']
        generated = _music_statistics(clip, sample_rate)
        training = _music_statistics(pieces[description], sample_rate)
        cells = [f'{generated[name]:.2f} | {training[name]:.2f}' for name in names]
        lines.append(f'| {description} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n\n' + '\n'.join(f'- `{name}`: {meaning}' for name, meaning in
                                                   MUSIC_STATISTICS.items())


def run(out: Path, quick: bool = False, clip_duration: float = 4.) -> Path:
    """Run the demo; return the report's path.

    Args:
        out (Path): folder for the exported LM, the clips and REPORT.md.
        quick (bool): a few updates per XP instead of the demo's schedule (to check the pipeline).
        clip_duration (float): seconds per generated clip.
    """
    from .export import export
    from .generate import generate
    from .train import get_xp_from_sig, main
    start = time.time()
    timings: tp.Dict[str, float] = {}
    tokenizer_argv = TOKENIZER_ARGV + (QUICK_TOKENIZER if quick else [])
    _dora_run(tokenizer_argv)
    tokenizer_sig = main.get_xp(tokenizer_argv).sig
    # the small LM config's default tokenizer (a quick run keeps its toy tokenizer to itself)
    export(tokenizer_sig, out / 'tokenizer' if quick else env.REPO_ROOT / 'tokenizers' / 'encodec_mmd_small')
    timings['tokenizer'] = time.time() - start
    lm_argv = LM_ARGV + [f'compression_model_checkpoint={tokenizer_sig}'] + (QUICK_LM if quick else [])
    _dora_run(lm_argv)
    lm_sig = main.get_xp(lm_argv).sig
    timings['LM'] = time.time() - start - sum(timings.values())
    folder = export(lm_sig, out / 'musicgen')
    pieces = _training_pieces(NUM_CLIPS)
    clips = generate(str(folder), list(pieces), duration=clip_duration, out_dir=out / 'samples', seed=0)
    timings['generation'] = time.time() - start - sum(timings.values())
    music = music_table(clips, pieces, sample_rate=get_xp_from_sig(tokenizer_sig).cfg.sample_rate)
    report = out / 'REPORT.md'
    report.write_text(_report(tokenizer_sig, lm_sig, tokenizer_argv=tokenizer_argv, lm_argv=lm_argv, folder=folder,
                              clips=clips, music=music, timings=timings, clip_duration=clip_duration))
    print(f"demo done in {(time.time() - start) / 60:.1f} min: {report}")
    return report


def _report(tokenizer_sig: str, lm_sig: str, tokenizer_argv: tp.List[str], lm_argv: tp.List[str], folder: Path,
            clips: tp.List[Path], music: str, timings: tp.Dict[str, float], clip_duration: float) -> str:
    from . import report
    from .train import get_xp_from_sig
    tokenizer_xp, lm_xp = get_xp_from_sig(tokenizer_sig), get_xp_from_sig(lm_sig)
    tokenizer_table = report.markdown_table(report.collect([tokenizer_xp]), per_xp=True)
    lm_columns = report.columns_for([lm_xp])
    lm_table = report.markdown_table(report.collect([lm_xp], lm_columns), per_xp=True, columns=lm_columns)
    descriptions = [json.loads(clip.with_suffix('.json').read_text())['description'] for clip in clips]
    clip_lines = [f"- `{clip.relative_to(folder.parent)}`: {text}" for clip, text in zip(clips, descriptions)]
    took = ', '.join(f'{name} {seconds / 60:.1f} min' for name, seconds in timings.items())
    return f"""# audiocraft_mmd demo

Took: {took} (`python -m audiocraft_mmd.demo`).

## Tokenizer `{tokenizer_sig}` (`dora run {' '.join(tokenizer_argv)}`)

{tokenizer_table}

## LM `{lm_sig}` (`dora run {' '.join(lm_argv)}`)

NLL in bits per frame is the sum over the 4 codebooks; `TC - shuffled` is the dependence of the tokens on the
tuple the delay pattern samples in one step (what its factorized prediction ignores).

{lm_table}

## Clips ({clip_duration:g} s each, AudioCraft's `MusicGen.get_pretrained('{folder}')`)

{chr(10).join(clip_lines)}

Notes or drone? Two statistics of each clip, next to those of the training piece it was asked for (whole piece):

{music}

Made again with:

```bash
python -m audiocraft_mmd.export {lm_sig} {folder}
python -m audiocraft_mmd.generate {folder} --duration {clip_duration:g} --seed 0 --out {folder.parent / 'samples'} \\
    --descriptions {' '.join(map(repr, descriptions))}
```

A small LM after a few minutes on a CPU, on a tokenizer trained for a few minutes on rendered General MIDI music:
expect the timbres of the training set, not coherent music.
"""


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.demo', description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=env.REPO_ROOT / 'outputs' / 'demo',
                        help="folder for the exported model, the clips and REPORT.md (default: outputs/demo)")
    parser.add_argument('--quick', action='store_true', help="a few updates per XP: checks the pipeline in minutes")
    parser.add_argument('--clip_duration', type=float, default=4., help="seconds per clip (default 4)")
    opts = parser.parse_args(argv)
    env.ensure_ffmpeg()
    run(opts.out, quick=opts.quick, clip_duration=opts.clip_duration)
    return 0


if __name__ == '__main__':
    sys.exit(main())
