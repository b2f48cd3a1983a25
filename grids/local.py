"""Run a grid's XPs on this machine, without SLURM: `python -m grids.local NAME [--small] [-j N] [--dry_run]`.

It builds the grid's XPs exactly as `dora grid NAME` does (same signatures, same Dora folder) and runs each with
`dora run`, one after the other (or N at a time). Afterwards `dora grid NAME --dry_run` (with the same
AUDIOCRAFT_MMD_GRID_SCALE) shows their table, and `python -m audiocraft_mmd.report NAME` summarizes them.
"""
import argparse
from concurrent.futures import ThreadPoolExecutor
import importlib
import os
import subprocess
import sys
import typing as tp

from dora.explore import Herd, Launcher
from dora.shep import Shepherd


def grid_xps(name: str) -> tp.List[tp.Any]:
    """XPs of grid `name` (module `grids.<name>`), as `dora grid` would schedule them."""
    from audiocraft_mmd.train import main
    explorer = importlib.import_module(f'grids.{name}').explorer
    herd = Herd()
    shepherd = Shepherd(main)
    launcher = Launcher(shepherd, main.get_slurm_config(), herd)
    explorer(launcher)
    herd.complete()
    return [sheep.xp for sheep in herd.sheeps.values()]


def _run(argv: tp.List[str], extra: tp.List[str]) -> int:
    cmd = [sys.executable, '-m', 'dora', 'run'] + list(argv) + extra
    print('+', ' '.join(cmd), flush=True)
    return subprocess.call(cmd)


def main(args: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m grids.local', description=__doc__.split('\n')[0])
    parser.add_argument('name', help="grid module under grids/, e.g. mmd_sweep")
    parser.add_argument('--small', action='store_true', help="bind encodec_mmd_small (2 CPU cores)")
    parser.add_argument('-j', '--jobs', type=int, default=1, help="XPs run at the same time")
    parser.add_argument('--dry_run', action='store_true', help="print the XPs and exit")
    parser.add_argument('overrides', nargs='*', help="extra overrides for every XP, e.g. device=cuda "
                        "(excluded keys only, or the signatures change)")
    opts = parser.parse_intermixed_args(args)
    if opts.small:
        os.environ['AUDIOCRAFT_MMD_GRID_SCALE'] = 'small'
    xps = grid_xps(opts.name)
    for xp in xps:
        print(xp.sig, ' '.join(xp.argv))
    if opts.dry_run:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        codes = list(pool.map(lambda xp: _run(xp.argv, opts.overrides), xps))
    failed = [xp.sig for xp, code in zip(xps, codes) if code != 0]
    if failed:
        print(f"{len(failed)} XP(s) failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
