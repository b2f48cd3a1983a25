"""Run a grid's XPs on this machine, without SLURM: `python -m grids.local NAME [--small] [-j N] [--dry_run]`.

It builds the grid's XPs exactly as `dora grid NAME` does (same signatures, same Dora folder) and runs each with
`dora run`, one after the other (or N at a time). Afterwards `dora grid NAME --dry_run` (with the same
AUDIOCRAFT_MMD_GRID_SCALE) shows their table, and `python -m audiocraft_mmd.report NAME` summarizes them.

With `--deadline SECONDS` (a lease on a lent machine, say), XPs still running then are stopped; each keeps its last
epoch's checkpoint and history, and its evaluate stage is run on that checkpoint and added to its history
(`python -m audiocraft_mmd.evaluate --commit`), so every XP ends with evaluate metrics. (AudioCraft writes the
checkpoint before history.json: an XP stopped between the two has a history.json one epoch short, and the
evaluation rewrites it from the checkpoint's history.) XPs not started by then
are not run. A stopped XP resumes from its checkpoint with the same `dora run` command.

With `--epochs N`, each XP is stopped once N epochs are committed (history.json holds them, so the checkpoint of
epoch N is on disk): XPs of a grid compared at an equal number of updates, within a session's time; the same
command without it continues them later. `--only SIG,SIG` runs those XPs of the grid and the tokenizer XPs of the
grid they train on.
"""
import argparse
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import traceback
import typing as tp

from audiocraft_mmd.xps import add_scale_arguments, grid_xps, tokenizer_ref


STOPPED = -1000  # return code of an XP stopped at the deadline
NOT_RUN = -1001  # return code of an XP not started before the deadline
DEPENDENCY_FAILED = -1002  # return code of an XP whose tokenizer XP (same grid) did not finish
CRASHED = -1003  # return code of an XP that this runner failed to start (its traceback is printed)


def run_with_dependencies(xps: tp.Sequence[tp.Any], run_one: tp.Callable[[tp.Any], int], jobs: int) -> tp.List[int]:
    """Run XPs `jobs` at a time; an XP whose `compression_model_checkpoint` is the signature of an earlier XP of the
    list (an LM on a tokenizer the grid trains) waits for it, and is not run if it failed or stopped.

    Returns:
        One return code per XP (DEPENDENCY_FAILED for the XPs not run because of their tokenizer, CRASHED where
        `run_one` raised).
    """
    from concurrent.futures import Future
    done: tp.Dict[str, Future] = {}

    def run(xp: tp.Any) -> int:
        for tokenizer in map(tokenizer_ref, xp.argv):
            if tokenizer in done:
                # listed earlier, so submitted earlier: it is running or done (the pool is first in, first out)
                if done[tokenizer].result() != 0:
                    return DEPENDENCY_FAILED
        try:
            return run_one(xp)
        except Exception:  # said now, not when the whole pool is done; the XPs that need this one are skipped
            print(f"{xp.sig} could not be run:", file=sys.stderr, flush=True)
            traceback.print_exc()
            return CRASHED

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = []
        for xp in xps:
            futures.append(pool.submit(run, xp))
            done[xp.sig] = futures[-1]
        return [future.result() for future in futures]


def select(xps: tp.Sequence[tp.Any], only: tp.Sequence[str]) -> tp.List[tp.Any]:
    """The XPs of `xps` whose signature is in `only`, with the XPs of `xps` they name as tokenizer, in grid order.

    Raises:
        ValueError: a signature of `only` is not an XP of the grid.
    """
    by_sig = {xp.sig: xp for xp in xps}
    unknown = [sig for sig in only if sig not in by_sig]
    if unknown:
        raise ValueError(f"not XPs of this grid: {' '.join(unknown)}; `--dry_run` lists its signatures")
    wanted = set(only)
    for sig in only:
        wanted.update(ref for ref in map(tokenizer_ref, by_sig[sig].argv) if ref in by_sig)
    return [xp for xp in xps if xp.sig in wanted]


def committed_epochs(folder: Path) -> int:
    """Epochs an XP folder has committed: the length of its history.json (0 if none yet, or caught mid-write)."""
    try:
        return len(json.loads((folder / 'history.json').read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def run_sig(argv: tp.Sequence[str], extra: tp.Sequence[str]) -> str:
    """Signature of the XP that `dora run ARGV EXTRA` runs."""
    from audiocraft_mmd.train import main as dora_main
    return dora_main.get_xp(list(argv) + list(extra)).sig


def xp_folder(argv: tp.Sequence[str], extra: tp.Sequence[str]) -> Path:
    """Folder of the XP that `dora run ARGV EXTRA` runs."""
    from audiocraft_mmd.train import main as dora_main
    return Path(dora_main.get_xp(list(argv) + list(extra)).folder)


def _run(argv: tp.List[str], extra: tp.List[str], deadline: tp.Optional[float] = None,
         stop_when: tp.Optional[tp.Callable[[], bool]] = None, poll_s: float = 1.) -> int:
    """`dora run` one XP; stop it at `deadline` (time.monotonic()), or once `stop_when()` is true, if it still runs.

    `stop_when` is polled every `poll_s` seconds while the XP runs: it stops the XP on an event (say, "its first
    checkpoint exists"), which a slower machine reaches later, where a deadline is a fixed time. Returns the XP's
    exit code, STOPPED if it was stopped, NOT_RUN if the deadline had passed before it started.
    """
    if deadline is not None and time.monotonic() >= deadline:
        return NOT_RUN
    cmd = [sys.executable, '-m', 'dora', 'run'] + list(argv) + extra
    print('+', ' '.join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    try:
        while True:
            timeout = None if deadline is None else max(0., deadline - time.monotonic())
            if stop_when is not None:
                timeout = poll_s if timeout is None else min(poll_s, timeout)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if (deadline is not None and time.monotonic() >= deadline) or (stop_when is not None and stop_when()):
                    break
        if proc.poll() is not None:  # it ended on its own while stop_when was being asked
            return proc.returncode
    except Exception:  # a failing stop_when: do not leave the XP running
        _interrupt(proc)
        raise
    _interrupt(proc)
    return STOPPED


def _interrupt(proc: subprocess.Popen) -> None:
    """SIGINT, like Ctrl-C: the XP keeps the checkpoint of its last finished epoch. Killed if not gone in 60 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _evaluate(sig: str) -> int:
    """Evaluate a stopped XP's last checkpoint and commit the metrics to its history."""
    cmd = [sys.executable, '-m', 'audiocraft_mmd.evaluate', '--commit', sig]
    print('+', ' '.join(cmd), flush=True)
    return subprocess.call(cmd)


def interruptible_children() -> None:
    """Let the XPs this process starts receive the SIGINT that stops them (`_interrupt`). A shell starts a background
    job (`cmd &`, nohup in a script) with SIGINT ignored, an ignored signal stays ignored across exec, and Python
    then installs no KeyboardInterrupt handler: `dora run` would run on until killed 60 s later. Main thread only."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(args: tp.Optional[tp.List[str]] = None) -> int:
    interruptible_children()
    parser = argparse.ArgumentParser(prog='python -m grids.local', description=__doc__.split('\n')[0])
    parser.add_argument('name', help="grid module under grids/, e.g. mmd_sweep")
    add_scale_arguments(parser)  # --small (encodec_mmd_small_v2, 2 CPU cores) or --small_v1
    parser.add_argument('-j', '--jobs', type=int, default=1, help="XPs run at the same time")
    parser.add_argument('--dry_run', action='store_true', help="print the XPs and exit")
    parser.add_argument('--deadline', type=float, default=None,
                        help="seconds after which running XPs are stopped and evaluated on their last checkpoint")
    parser.add_argument('overrides', nargs='*', help="extra overrides for every XP, e.g. device=cuda "
                        "(excluded keys only, or the signatures change)")
    parser.add_argument('--epochs', type=int, default=None,
                        help="stop each XP once it has committed this many epochs (continue later without it)")
    parser.add_argument('--only', type=lambda text: [sig for sig in text.split(',') if sig], default=None,
                        metavar='SIG,SIG', help="run only these XPs of the grid (and the grid's tokenizer XPs "
                        "they train on)")
    opts = parser.parse_intermixed_args(args)
    if opts.epochs is not None and opts.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {opts.epochs}")
    if opts.scale is not None:
        os.environ['AUDIOCRAFT_MMD_GRID_SCALE'] = opts.scale
    xps = grid_xps(opts.name)
    if opts.only:
        try:
            xps = select(xps, opts.only)
        except ValueError as error:
            parser.error(str(error))
    for xp in xps:
        print(xp.sig, ' '.join(xp.argv))
    if opts.dry_run:
        return 0
    deadline = None if opts.deadline is None else time.monotonic() + opts.deadline

    # Hydra's config composition is not thread-safe: every folder is resolved here, before the worker threads
    folders = {xp.sig: xp_folder(xp.argv, opts.overrides) for xp in xps} if opts.epochs is not None else {}

    def run_one(xp: tp.Any) -> int:
        if opts.epochs is None:
            return _run(xp.argv, opts.overrides, deadline)
        folder = folders[xp.sig]
        if committed_epochs(folder) >= opts.epochs:
            print(f"{xp.sig}: {opts.epochs} epochs already committed", flush=True)
            return 0
        code = _run(xp.argv, opts.overrides, deadline, stop_when=lambda: committed_epochs(folder) >= opts.epochs)
        # stopped where it was asked to stop: a success, and its LMs may train on it
        return 0 if code == STOPPED and committed_epochs(folder) >= opts.epochs else code

    codes = run_with_dependencies(xps, run_one, opts.jobs)
    # the signatures the XPs ran under: the extra overrides change them unless Dora excludes their keys
    sigs = [run_sig(xp.argv, opts.overrides) for xp in xps]
    stopped = [sig for sig, code in zip(sigs, codes) if code == STOPPED]
    not_run = [sig for sig, code in zip(sigs, codes) if code == NOT_RUN]
    if stopped:
        print(f"stopped at the deadline: {' '.join(stopped)}; evaluating their last checkpoint", flush=True)
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            eval_codes = dict(zip(stopped, pool.map(_evaluate, stopped)))
        codes = [eval_codes[sig] if code == STOPPED else code for sig, code in zip(sigs, codes)]
    if not_run:
        print(f"not started before the deadline: {' '.join(not_run)}", file=sys.stderr)
    skipped = [sig for sig, code in zip(sigs, codes) if code == DEPENDENCY_FAILED]
    if skipped:
        print(f"not run, their tokenizer XP did not finish: {' '.join(skipped)}", file=sys.stderr)
    failed = [sig for sig, code in zip(sigs, codes) if code not in (0, NOT_RUN, DEPENDENCY_FAILED)]
    if failed:
        print(f"{len(failed)} XP(s) failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
