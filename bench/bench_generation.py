"""Generation speed of the delay and unroll patterns, our generation path against AudioCraft's, and the LM step.

    python bench/bench_generation.py                            # CPU: the small LM (4 x 128, 4 x 256 codes, 50 Hz)
    python bench/bench_generation.py --paper --device cuda      # MusicGen small (24 x 1024, 4 x 2048 codes)

All in one run, on the device it names, with random weights (speed does not depend on them):
1. throughput of `LMModel.generate` for the delay and the unroll pattern at equal LM size: audio seconds per wall
   second and tokens per second (goal: delay at least 3.5x unroll for 4 codebooks; it takes 4x fewer steps);
2. `audiocraft_mmd.generate`'s sampling on an exported folder (`MusicGen.get_pretrained`) against AudioCraft's own
   `MusicGen(...).generate` built in memory on the same weights (goal: within 2%; loading and writing files are
   left out: both use AudioCraft's own loader and `audio_write`);
3. one training step (`run_step` on a fixed batch) of `musicgen_mmd` against AudioCraft's `MusicGenSolver` on the
   same config (goal: within 2%; the dependence is counted on valid/evaluate only).
Rows alternate between the compared variants, and medians are reported, so that drift hits both alike.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
import typing as tp

import torch

from audiocraft_mmd.train import get_solver, main

DESCRIPTION = 'A Bach chorale for pipe organ in F major, 4 voices, moderate tempo.'


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _timed(fn: tp.Callable[[], tp.Any], device: str) -> float:
    _sync(device)
    begin = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - begin


def _alternate(fns: tp.Dict[str, tp.Callable[[], tp.Any]], repeats: int, warmup: int, device: str
               ) -> tp.Dict[str, float]:
    """Median seconds of each callable, timed in alternation after `warmup` untimed rounds."""
    times: tp.Dict[str, tp.List[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            elapsed = _timed(fn, device)
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def lm_argv(paper: bool, device: str) -> tp.List[str]:
    solver = 'musicgen/musicgen_mmd_32khz' if paper else 'musicgen/musicgen_mmd_small'
    argv = [f'solver={solver}', f'device={device}', 'dataset.num_workers=0']
    if paper:  # the T5 conditioner needs a download: time the LM with the offline lookup table instead
        argv += ['conditioners.description.model=lut', '+conditioners.description.lut.n_bins=1024',
                 '+conditioners.description.lut.dim=64', '+conditioners.description.lut.tokenizer=noop',
                 'evaluate.metrics.fad=false', 'evaluate.metrics.kld=false',
                 'evaluate.metrics.text_consistency=false', 'autocast=false', 'dataset.batch_size=8',
                 'dataset.segment_duration=10']
    return argv


def tokenizer_checkpoint(paper: bool, folder: Path) -> Path:
    """A randomly initialized tokenizer of the LM's size, saved as an AudioCraft compression checkpoint."""
    from audiocraft.models.builders import get_compression_model
    cfg = main.get_xp([f"solver=compression/{'encodec_mmd' if paper else 'encodec_mmd_small'}"]).cfg
    cfg.device = 'cpu'
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    path = folder / 'checkpoint.th'
    torch.save({'best_state': {'model': model.state_dict()}, 'xp.cfg': cfg}, path)
    return path


def pattern_throughput(cfg: tp.Any, frame_rate: float, seconds: float, repeats: int, device: str
                       ) -> tp.Dict[str, tp.Tuple[float, int]]:
    """Median wall seconds to generate `seconds` of tokens, and the tokens generated, per pattern."""
    from audiocraft.models.builders import get_lm_model
    from audiocraft.modules.conditioners import ConditioningAttributes
    steps = int(seconds * frame_rate)
    fns, tokens = {}, {}
    for pattern in ('delay', 'unroll'):
        cfg.codebooks_pattern.modeling = pattern
        torch.manual_seed(0)
        lm = get_lm_model(cfg).to(device).eval()
        attributes = [ConditioningAttributes(text={'description': DESCRIPTION})]

        def run(lm=lm):
            with torch.no_grad():
                return lm.generate(None, attributes, num_samples=1, max_gen_len=steps, use_sampling=True, top_k=250,
                                   cfg_coef=3.)
        fns[pattern] = run
        tokens[pattern] = steps * lm.num_codebooks
    medians = _alternate(fns, repeats, 1, device)
    return {name: (medians[name], tokens[name]) for name in fns}


def main_cli(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--paper', action='store_true', help="MusicGen small on the 32 kHz 4 x 2048 tokenizer")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seconds', type=float, default=None, help="audio seconds per generation (default 4; 10)")
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--steps', type=int, default=20, help="timed training steps per solver")
    opts = parser.parse_args(argv)
    seconds = opts.seconds or (10. if opts.paper else 4.)
    device = opts.device
    name = torch.cuda.get_device_name() if device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f"device: {name}; LM {'musicgen_mmd_32khz (MusicGen small)' if opts.paper else 'musicgen_mmd_small'}; "
          f"{seconds:g} s per generation, median of {opts.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tokenizer_checkpoint(opts.paper, Path(tmp))
        base = lm_argv(opts.paper, device) + [f'compression_model_checkpoint={checkpoint}']
        xp = main.get_xp(base)
        from omegaconf import OmegaConf
        from audiocraft.models import MusicGen
        from audiocraft.models.builders import get_lm_model
        from audiocraft.solvers.compression import CompressionSolver
        from audiocraft.utils.export import export_encodec
        from audiocraft_mmd.generate import sample
        compression = CompressionSolver.model_from_checkpoint(checkpoint, device=device)
        lm_cfg = xp.cfg.copy()

        # 1. delay vs unroll
        patterns = pattern_throughput(lm_cfg, compression.frame_rate, seconds, opts.repeats, device)
        print('\n| pattern | s per generation | audio s / wall s | tokens / s |\n|---|---|---|---|')
        for pattern, (elapsed, tokens) in patterns.items():
            print(f'| {pattern} | {elapsed:.2f} | {seconds / elapsed:.2f} | {tokens / elapsed:.0f} |')
        print(f"delay / unroll speed: {patterns['unroll'][0] / patterns['delay'][0]:.2f}x (goal >= 3.5x)")

        # 2. the exported folder loaded by MusicGen.get_pretrained and sampled by audiocraft_mmd.generate.sample,
        # against AudioCraft's MusicGen built in memory on the same weights
        lm_cfg.codebooks_pattern.modeling = 'delay'
        torch.manual_seed(0)
        lm = get_lm_model(lm_cfg).to(device).eval()
        lm.cfg = lm_cfg
        folder = Path(tmp) / 'export'
        folder.mkdir()
        export_encodec(checkpoint, folder / 'compression_state_dict.bin')
        exported_cfg = lm_cfg.copy()
        exported_cfg.dataset.segment_duration = 30.
        torch.save({'best_state': lm.state_dict(), 'xp.cfg': OmegaConf.to_yaml(exported_cfg), 'exported': True,
                    'version': 'bench'}, folder / 'state_dict.bin')
        plain = MusicGen('bench', compression, lm, max_duration=30.)
        plain.set_generation_params(duration=seconds, top_k=250)
        exported = MusicGen.get_pretrained(str(folder), device=device)

        def audiocraft():
            torch.manual_seed(0)
            plain.generate([DESCRIPTION])
        paths = _alternate({'AudioCraft MusicGen.generate': audiocraft,
                            'audiocraft_mmd.generate.sample (export folder)':
                                lambda: sample(exported, [DESCRIPTION], seconds, seed=0, progress=False)},
                           opts.repeats, 1, device)
        print('\n| generation path | s per clip | vs AudioCraft |\n|---|---|---|')
        reference = paths['AudioCraft MusicGen.generate']
        for label, elapsed in paths.items():
            print(f'| {label} | {elapsed:.2f} | {100 * (elapsed / reference - 1):+.1f}% |')

        # 3. the LM training step
        steps: tp.Dict[str, tp.Callable[[], tp.Any]] = {}
        for label, solver_name in (("AudioCraft's MusicGenSolver", 'musicgen'), ('musicgen_mmd', 'musicgen_mmd')):
            cfg = xp.cfg.copy()
            cfg.solver = solver_name
            with xp.enter():
                solver = get_solver(cfg)
            solver.model.train()
            solver._current_stage = 'train'  # what run_stage('train', ...) sets
            batch = next(iter(solver.dataloaders['train']))
            steps[label] = (lambda solver=solver, batch=batch: solver.run_step(0, batch, {}))
        step_times = _alternate(steps, opts.steps, 3, device)
        print('\n| solver | median ms/step | vs AudioCraft |\n|---|---|---|')
        reference = step_times["AudioCraft's MusicGenSolver"]
        for label, elapsed in step_times.items():
            print(f'| {label} | {elapsed * 1e3:.1f} | {100 * (elapsed / reference - 1):+.1f}% |')
    return 0


if __name__ == '__main__':
    sys.exit(main_cli())
