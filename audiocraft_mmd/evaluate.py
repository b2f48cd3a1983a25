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
  checkpoint;
* `--dset NAME` (e.g. `audio/real_music`, `audio/embedded_music`): cross-domain evaluation, on another dataset
  preset's evaluate split. The XP's command line is composed again with `dset=NAME` (Hydra's composition, as `dora
  run ... dset=NAME` would build it), and that config's solver restores the XP's last checkpoint. The result is not
  an entry of the XP's history (never with `--commit`): it goes to `<XP folder>/evaluate_<NAME, / as _>.json`,
  which `python -m audiocraft_mmd.report --dset NAME` reads. The XP's own dataset gives its same-domain row,
  computed the same way.

Like AudioCraft's run_one_stage, it evaluates the best state (for compression XPs without EMA: the last model).
"""
import argparse
import json
from pathlib import Path
import sys
import typing as tp

import torch

from .data.check import BadManifestError
from .paths import REPO_ROOT
from .xps import check_dset, cross_domain_path, shown

KEYS = ['codes_tc', 'codes_tc_excess', 'codes_tc_norm', 'codes_mi_mean', 'codes_mi_mean_excess', 'codes_util_min',
        'sisnr', 'visqol']  # AudioCraft logs the negated SI-SNR (a loss): the row shows SI-SNR in dB (`xps.shown`)


def check_options(commit: bool = False, tokenizer: tp.Optional[str] = None, dset: tp.Optional[str] = None) -> None:
    """Raise ValueError, before any XP is loaded, for options that cannot go together or a preset that does not
    exist: `commit` appends to the XP's history, which holds its own checkpoint's evaluations on its own dataset.

    Args:
        commit (bool): `--commit`.
        tokenizer (str, optional): `--tokenizer` (an exported tokenizer: not the XP's checkpoint).
        dset (str, optional): `--dset` (another dataset: its result goes to `xps.cross_domain_path`).
    """
    if tokenizer is not None and commit:
        raise ValueError("--commit records a checkpoint's evaluation in its XP's history: not with --tokenizer.")
    if dset is not None:
        if commit:
            raise ValueError("--commit appends to the XP's own history, which holds evaluations on its own "
                             f"dataset: a --dset evaluation goes to {cross_domain_path('', dset)} in the XP's "
                             "folder instead. Drop --commit (or --dset).")
        check_dset(dset)


def dset_config(xp: tp.Any, dset: str) -> tp.Any:
    """The XP's config composed with `dset=NAME`: its command line (any `dset=` in it replaced) composed again by
    Dora and Hydra, as `dora run <argv> dset=NAME` would build it. The result names another XP (the signature
    changes); only its config is used.

    Args:
        xp: the Dora XP.
        dset (str): the dataset preset.
    Returns:
        The composed config (DictConfig).
    """
    from .train import main
    argv = [arg for arg in xp.argv if not arg.lstrip('+').startswith('dset=')] + [f'dset={dset}']
    return main.get_xp(argv).cfg


def check_evaluate_data(cfg: tp.Any) -> None:
    """Before building the solver: raise `BadManifestError` naming every bad audio file (missing, truncated, not
    audio, other sample rate) of the evaluate split and its fix, instead of a decoder's error mid-evaluation.

    A missing manifest is left to `env.check_datasource` (the solver's start), which names the build command.
    """
    from .data import check
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
                tokenizer: tp.Optional[str] = None, dset: tp.Optional[str] = None) -> tp.Dict[str, float]:
    """Run the evaluate stage of XP `sig` on its last checkpoint (on its own dataset, or on preset `dset`).

    Args:
        sig (str): Dora signature of the XP (in this package's Dora folder).
        commit (bool): append the metrics to the XP's history (AudioCraft's `run_one_stage`); otherwise the XP's
            folder is left as it is.
        visqol (bool, optional): run ViSQOL or not; None keeps the XP's setting.
        measure_pattern (str, optional): `mmd.measure_pattern` to measure the codes with; None keeps the XP's.
        device (str, optional): device to run on; None keeps the XP's.
        tokenizer (str, optional): exported tokenizer (`compression_state_dict.bin`) to evaluate instead of the
            XP's checkpoint; not with `commit`.
        dset (str, optional): evaluate on this dataset preset's evaluate split (the XP's config composed with
            `dset=NAME`); the metrics are written to `cross_domain_path(xp.folder, dset)`, not to the history, so
            not with `commit`.
    Returns:
        The evaluate metrics.
    """
    check_options(commit=commit, tokenizer=tokenizer, dset=dset)
    from omegaconf import OmegaConf
    from .train import get_solver_from_sig, get_xp_from_sig, main
    xp = get_xp_from_sig(sig)
    cfg = xp.cfg if dset is None else dset_config(xp, dset)
    check_evaluate_data(cfg)
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
    # With dset: the composed config differs from the XP's in what the preset sets (`datasource`), so merged over
    # the XP's config it gives that config; the solver still restores from the XP's folder (`xp.enter()`).
    override_cfg: tp.Any = override if dset is None else OmegaConf.merge(cfg, override)
    solver = get_solver_from_sig(sig, override_cfg=override_cfg, load_best=False, restore=tokenizer is None)
    if tokenizer is not None:
        package = torch.load(tokenizer, map_location='cpu', weights_only=False)
        if not isinstance(package, dict) or 'best_state' not in package:
            raise ValueError(f"{tokenizer} is not an exported tokenizer: write one with "
                             "`python -m audiocraft_mmd.export SIG OUT_DIR`.")
        solver.model.load_state_dict(package['best_state'])
        with torch.no_grad():
            metrics = solver.run_stage('evaluate', solver.evaluate)
    elif commit:
        solver.run_one_stage('evaluate')
        return solver.history[-1]['evaluate']
    else:
        with torch.no_grad(), solver.swap_best_state():
            metrics = solver.run_stage('evaluate', solver.evaluate)
    if dset is not None:
        from .data.common import write_text_atomic
        history = solver.history if tokenizer is None else main.get_xp_history(xp)
        record = {'sig': sig, 'dset': dset, 'evaluate_manifest': str(solver.cfg.datasource.evaluate),
                  'epochs': sum('train' in entry for entry in history), 'tokenizer': tokenizer,
                  'measure_pattern': str(solver.cfg.mmd.measure_pattern) if 'mmd' in solver.cfg else None,
                  'evaluate': {key: float(value) for key, value in metrics.items()}}
        write_text_atomic(cross_domain_path(xp.folder, dset), json.dumps(record, indent=1) + '\n')
    return metrics


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
    parser.add_argument('--dset', default=None, metavar='NAME',
                        help="evaluate on this dataset preset's evaluate split (e.g. audio/real_music); written to "
                             "<XP folder>/evaluate_<NAME, / as _>.json, not to the history")
    opts = parser.parse_args(args)
    if opts.tokenizer is not None and len(opts.sigs) != 1:
        parser.error("--tokenizer evaluates one XP's tokenizer: pass one SIG")
    try:
        check_options(commit=opts.commit, tokenizer=opts.tokenizer, dset=opts.dset)
    except ValueError as exc:
        parser.error(str(exc))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    print('| XP | ' + ' | '.join('SI-SNR (dB)' if k == 'sisnr' else k for k in KEYS) + ' |')
    print('|---' * (len(KEYS) + 1) + '|')
    for sig in opts.sigs:
        visqol = False if opts.no_visqol else (True if opts.visqol else None)
        try:
            metrics = evaluate_xp(sig, commit=opts.commit, visqol=visqol, measure_pattern=opts.measure_pattern,
                                  device=opts.device, tokenizer=opts.tokenizer, dset=opts.dset)
        except BadManifestError as exc:
            print(f"XP {sig}: not evaluated, {exc}", file=sys.stderr)
            return 1
        cells = [f'{shown(k, float(metrics[k])):.3f}' if k in metrics else '' for k in KEYS]
        print(f"| {sig} | " + ' | '.join(cells) + ' |', flush=True)
        if opts.dset is not None:
            from .train import get_xp_from_sig
            print(f"XP {sig} on {opts.dset}: wrote {cross_domain_path(get_xp_from_sig(sig).folder, opts.dset)}",
                  file=sys.stderr, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
