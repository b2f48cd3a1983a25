"""Dora entry point of audiocraft_mmd: AudioCraft's training main, over AudioCraft's config tree plus this repo's.

Run from the repository root, exactly like AudioCraft::

    dora run solver=compression/encodec_mmd_small_v2       # a plugin solver
    dora run solver=compression/debug dset=audio/embedded_music   # any AudioCraft solver works too
    dora grid mmd_sweep --dry_run --init                    # grids live in the top-level `grids/` package

Hydra's primary config is AudioCraft's own `config/config.yaml` (AudioCraft must be installed editable from its
source tarball, which is the only distribution that ships `config/`); this repo's `config/` folder is added to the
search path by a Hydra SearchPathPlugin registered below, before the `@hydra_main` line, so that Dora's config-group
listing sees it too (a `hydra.searchpath` entry in a YAML file would not be seen there).
"""
import os
import sys
import typing as tp

import flashy
import omegaconf
from dora import hydra_main, git_save
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from . import env
# Fails with the install command when AudioCraft lacks its config tree, before AudioCraft's own main would.
AUDIOCRAFT_CONFIG_DIR = env.audiocraft_config_dir()
# Imported here, outside any Hydra app: AudioCraft code imports `audiocraft.train` lazily (checkpoint lookup,
# seeding), and its module-level Dora main cannot be built while a Hydra app runs. It reads AUDIOCRAFT_DORA_DIR,
# which `env` pointed at this package's Dora folder.
import audiocraft.train as audiocraft_train  # noqa: E402


PLUGIN_CONFIG_DIR = env.REPO_ROOT / 'config'

# Solver names this package adds, mapped lazily to 'module:Class' (importing a solver pulls in most of AudioCraft).
SOLVERS: tp.Dict[str, str] = {
    'compression_mmd': 'audiocraft_mmd.solvers.compression_mmd:CompressionMMDSolver',
    'musicgen_mmd': 'audiocraft_mmd.solvers.musicgen_mmd:MusicGenMMDSolver',
}


class AudiocraftMMDSearchPathPlugin(SearchPathPlugin):
    """Appends this repository's `config/` folder after AudioCraft's (plugin files never shadow AudioCraft's)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider='audiocraft_mmd', path=f'file://{PLUGIN_CONFIG_DIR}')


Plugins.instance().register(AudiocraftMMDSearchPathPlugin)


def build_solver(cfg: omegaconf.DictConfig):
    """Instantiate the solver named by `cfg.solver`: this package's names first, then AudioCraft's.

    Args:
        cfg (DictConfig): the XP config (batch sizes already per worker).
    Returns:
        The solver (a subclass of `audiocraft.solvers.base.StandardSolver`).
    """
    import importlib
    if cfg.solver in SOLVERS:
        module_name, class_name = SOLVERS[cfg.solver].split(':')
        return getattr(importlib.import_module(module_name), class_name)(cfg)
    # AudioCraft keeps its names in a dict literal inside `get_solver`: there is nothing to register into.
    from audiocraft.solvers import builders
    try:
        return builders.get_solver(cfg)
    except KeyError as exc:
        if exc.args != (cfg.solver,):
            raise
        raise ValueError(f"Unknown solver {cfg.solver!r}: this package provides {sorted(SOLVERS)}; otherwise use "
                         "one of AudioCraft's (compression, musicgen, audiogen, magnet, diffusion).") from None


def get_solver(cfg: omegaconf.DictConfig):
    """Build the solver of `cfg` (per-GPU batch sizes and absolute manifest paths, as AudioCraft's main does).

    Args:
        cfg (DictConfig): the XP config.
    Returns:
        The instantiated solver.
    """
    world_size = flashy.distrib.world_size()
    for node in [cfg.dataset] + [cfg.dataset[s] for s in ('train', 'valid', 'evaluate', 'generate')
                                 if s in cfg.dataset and 'batch_size' in cfg.dataset[s]]:
        if node.batch_size % world_size != 0:
            raise ValueError(f"dataset batch_size {node.batch_size} is not divisible by the {world_size} "
                             "workers: batch sizes are global, pick a multiple of the number of workers.")
        node.batch_size //= world_size
    for key, value in cfg.datasource.items():
        if isinstance(value, str):
            cfg.datasource[key] = git_save.to_absolute_path(value)
    env.check_datasource(cfg)
    return build_solver(cfg)


class XPNotFound(LookupError):
    """No XP of a given signature in this package's Dora folder."""


def get_xp_from_sig(sig: str) -> tp.Any:
    """The Dora XP of signature `sig`, checked against the current configs.

    Dora stores only an XP's command line and recomputes its signature from the current config tree, which hashes
    the overrides that differ from the solver's defaults. After a default changes, the stored command line can map
    to another signature, and so to another XP's folder and checkpoints: this refuses that instead of reading them.

    Args:
        sig (str): Dora signature of the XP (in this package's Dora folder).
    Returns:
        The `dora.XP`.
    Raises:
        XPNotFound: no XP of that signature ran in this Dora folder.
    """
    try:
        xp = main.get_xp_from_sig(sig)
    except RuntimeError as exc:
        if 'Could not find experiment' not in str(exc):  # Dora's: no stored command line (here or in dora.shared)
            raise
        raise XPNotFound(
            f"no XP {sig} in this Dora folder ({main.dora.dir}/xps/{sig}/.argv.json missing): run it first (its "
            f"`dora run` command or its grid), or point AUDIOCRAFT_MMD_DORA_DIR at the folder that holds "
            f"it.") from exc
    if xp.sig != sig:
        raise RuntimeError(
            f"XP {sig} ran with configs whose defaults have since changed: its command line "
            f"({' '.join(xp.argv)}) now maps to XP {xp.sig}, so its folder can no longer be found from it. Check "
            f"out the commit it ran at, or, if its setting is unchanged and {main.dora.dir}/xps/{xp.sig} does "
            f"not exist, move its folder there.")
    return xp


def get_solver_from_sig(sig: str, override_cfg: tp.Optional[dict] = None, restore: bool = True,
                       load_best: bool = True, ignore_state_keys: tp.Sequence[str] = ()):
    """Load the solver of one of this package's XPs (AudioCraft's version only knows AudioCraft's solvers).

    Args:
        sig (str): Dora signature of the XP (in this package's Dora folder).
        override_cfg (dict, optional): nested overrides applied to the XP config (the signature is unchanged),
            e.g. `{'device': 'cpu', 'dataset': {'num_workers': 0}}`.
        restore (bool): restore the last checkpoint.
        load_best (bool): load the best state (for compression: the last EMA/best model).
        ignore_state_keys (list of str): state sources not to load, e.g. ['optimizer'].
    Returns:
        The solver, ready for `solver.run_one_stage('evaluate')` or to use `solver.model`.
    """
    import hydra
    xp = get_xp_from_sig(sig)
    cfg = xp.cfg
    if override_cfg is not None:
        cfg = omegaconf.OmegaConf.merge(cfg, omegaconf.DictConfig(override_cfg))
    try:
        with xp.enter():
            solver = get_solver(cfg)
            if restore:
                solver.restore(load_best=load_best, ignore_state_keys=list(ignore_state_keys))
        return solver
    finally:
        hydra.core.global_hydra.GlobalHydra.instance().clear()


@hydra_main(config_path=str(AUDIOCRAFT_CONFIG_DIR), config_name='config', version_base='1.1')
def main(cfg):
    audiocraft_train.init_seed_and_system(cfg)
    log_name = '%s.log.{rank}' % cfg.execute_only if cfg.execute_only else 'solver.log.{rank}'
    flashy.setup_logging(level=str(cfg.logging.level).upper(), log_name=log_name)
    # AudioCraft's main always asks for NCCL; on a CPU-only machine gloo makes `dora run -d` work.
    flashy.distrib.init(backend=env.distributed_backend())
    env.ensure_ffmpeg()
    solver = get_solver(cfg)
    if cfg.show:
        solver.show()
        return
    if cfg.execute_only:
        if not (cfg.execute_inplace or cfg.continue_from is not None):
            raise ValueError("execute_only needs a checkpoint: pass continue_from=<sig_or_path> "
                             "or execute_inplace=true.")
        solver.restore(replay_metrics=False)
        solver.run_one_stage(cfg.execute_only)
        return
    return solver.run()


main.dora.dir = env.dora_dir()
main._base_cfg.dora.dir = str(main.dora.dir)
# The grids of this repo live in the top-level `grids/` package (run `dora grid` from the repository root).
main.dora.grid_package = 'grids'
if main.dora.shared is not None and not os.access(main.dora.shared, os.R_OK):
    print("No read permission on dora.shared folder, ignoring it.", file=sys.stderr)
    main.dora.shared = None

if __name__ == '__main__':
    main()
