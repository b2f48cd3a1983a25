"""Run the evaluate stage of trained XPs on their last checkpoint: `python -m audiocraft_mmd.evaluate SIG...`.

Prints one Markdown row per XP (the codes' dependence on the LM's tuples, SI-SNR, ViSQOL). Uses:

* re-measure without touching the XP (the default): e.g. same-frame XPs that trained before `mmd.measure_pattern`
  existed logged their `codes_*` metrics on same-frame tuples,
  `python -m audiocraft_mmd.evaluate --no_visqol --device cpu ac8abfb6 e215fb5f`;
* `--commit`: for an XP stopped before its last epoch (at a deadline, `python -m grids.local --deadline`),
  append the evaluate metrics to its history as AudioCraft's `execute_only` run does (a history entry holding only
  `evaluate`), so that `dora grid` and `audiocraft_mmd.report` show them. Resuming the XP later drops that
  entry (the checkpoint holds the history up to its last epoch);
* `--tokenizer PATH`: evaluate an exported tokenizer (`python -m audiocraft_mmd.export`) with its XP's config,
  for an XP trained elsewhere (a lent GPU machine, a cluster) whose folder here holds its history but no
  checkpoint.

Like AudioCraft's run_one_stage, it evaluates the best state (for compression XPs without EMA: the last model).
"""
import argparse
import sys
import typing as tp

import torch

from .data.check import BadManifestError

KEYS = ['codes_tc', 'codes_tc_excess', 'codes_tc_norm', 'codes_mi_mean', 'codes_mi_mean_excess', 'codes_util_min',
        'sisnr', 'visqol']
NEGATED = {'sisnr'}  # AudioCraft logs the negated SI-SNR (a loss): the row shows SI-SNR in dB


def check_evaluate_data(cfg: tp.Any) -> None:
    """Before building the solver: raise `BadManifestError` naming every bad audio file (missing, truncated, not
    audio, other sample rate) of the evaluate split and its fix, instead of a decoder's error mid-evaluation.

    A missing manifest is left to `env.check_datasource` (the solver's start), which names the build command.
    """
    from pathlib import Path
    from .data import check
    from .env import REPO_ROOT
    value = cfg.datasource.get('evaluate')
    if not isinstance(value, str):
        return
    path = Path(value)
    if not path.is_absolute():   # resolved like the training main does: from where it runs, here the repo
        path = next((p for p in (Path.cwd() / path, REPO_ROOT / path) if p.exists()), path)
    try:
        check.manifest_files(path)
    except FileNotFoundError:
        return
    check.require_clean([path])


def evaluate_xp(sig: str, commit: bool = False, visqol: tp.Optional[bool] = None,
                measure_pattern: tp.Optional[str] = 'delay', device: tp.Optional[str] = None,
                tokenizer: tp.Optional[str] = None) -> tp.Dict[str, float]:
    """Run the evaluate stage of XP `sig` on its last checkpoint.

    Args:
        sig (str): Dora signature of the XP (in this package's Dora folder).
        commit (bool): append the metrics to the XP's history (AudioCraft's `run_one_stage`); otherwise the XP's
            folder is left as it is.
        visqol (bool, optional): run ViSQOL or not; None keeps the XP's setting.
        measure_pattern (str, optional): `mmd.measure_pattern` to measure the codes with; None keeps the XP's.
        device (str, optional): device to run on; None keeps the XP's.
        tokenizer (str, optional): exported tokenizer (`compression_state_dict.bin`) to evaluate instead of the
            XP's checkpoint; not with `commit`.
    Returns:
        The evaluate metrics.
    """
    from .train import get_solver_from_sig, get_xp_from_sig
    xp = get_xp_from_sig(sig)
    check_evaluate_data(xp.cfg)
    if tokenizer is not None and commit:
        raise ValueError("--commit records a checkpoint's evaluation in its XP's history: not with --tokenizer.")
    if tokenizer is None and not (xp.folder / 'checkpoint.th').exists():
        raise FileNotFoundError(f"XP {sig} has no checkpoint in {xp.folder}: it stopped before its first epoch "
                                "ended. Resume it with its `dora run` command.")
    override: tp.Dict[str, tp.Any] = {}
    if visqol is not None:
        override['evaluate'] = {'metrics': {'visqol': visqol}}
    if measure_pattern is not None:
        override['mmd'] = {'measure_pattern': measure_pattern}
    if device is not None:
        override['device'] = device
    solver = get_solver_from_sig(sig, override_cfg=override, load_best=False, restore=tokenizer is None)
    if tokenizer is not None:
        package = torch.load(tokenizer, map_location='cpu', weights_only=False)
        if not isinstance(package, dict) or 'best_state' not in package:
            raise ValueError(f"{tokenizer} is not an exported tokenizer: write one with "
                             "`python -m audiocraft_mmd.export SIG OUT_DIR`.")
        solver.model.load_state_dict(package['best_state'])
        with torch.no_grad():
            return solver.run_stage('evaluate', solver.evaluate)
    if commit:
        solver.run_one_stage('evaluate')
        return solver.history[-1]['evaluate']
    with torch.no_grad(), solver.swap_best_state():
        return solver.run_stage('evaluate', solver.evaluate)


def main(args: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.evaluate', description=__doc__.split('\n')[0])
    parser.add_argument('sigs', nargs='+', help="XP signatures")
    parser.add_argument('--commit', action='store_true',
                        help="append the metrics to each XP's history (for XPs stopped before their last epoch)")
    visqol = parser.add_mutually_exclusive_group()
    visqol.add_argument('--no_visqol', action='store_true', help="skip ViSQOL (about 1.5 min of a core per XP)")
    visqol.add_argument('--visqol', action='store_true', help="run ViSQOL even if the XP did not")
    parser.add_argument('--measure_pattern', default='delay',
                        help="pattern whose tuples the codes are measured on (default: delay, the LM's)")
    parser.add_argument('--device', default=None, help="default: the XP's")
    parser.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument('--tokenizer', default=None,
                        help="exported tokenizer to evaluate instead of the checkpoint (one SIG only)")
    opts = parser.parse_args(args)
    if opts.tokenizer is not None and len(opts.sigs) != 1:
        parser.error("--tokenizer evaluates one XP's tokenizer: pass one SIG")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    print('| XP | ' + ' | '.join('SI-SNR (dB)' if k == 'sisnr' else k for k in KEYS) + ' |')
    print('|---' * (len(KEYS) + 1) + '|')
    for sig in opts.sigs:
        visqol = False if opts.no_visqol else (True if opts.visqol else None)
        try:
            metrics = evaluate_xp(sig, commit=opts.commit, visqol=visqol, measure_pattern=opts.measure_pattern,
                                  device=opts.device, tokenizer=opts.tokenizer)
        except BadManifestError as exc:
            print(f"XP {sig}: not evaluated, {exc}", file=sys.stderr)
            return 1
        cells = [f'{(-1 if k in NEGATED else 1) * float(metrics[k]):.3f}' if k in metrics else '' for k in KEYS]
        print(f"| {sig} | " + ' | '.join(cells) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
