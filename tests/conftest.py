"""Shared fixtures. The embedded music set is real audio rendered offline; `make test` builds it first."""
import multiprocessing as mp
import os
import socket
import tempfile
import typing as tp

import pytest
import torch

# XPs made by the tests go to a throw-away Dora folder, not the user's outputs/ (read when the main is imported).
os.environ['AUDIOCRAFT_MMD_DORA_DIR'] = tempfile.mkdtemp(prefix='audiocraft_mmd_tests_')


@pytest.fixture
def one_thread():
    """Tiny tensor problems: one torch thread avoids oversubscription on shared 2-core machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope='session')
def embedded_music():
    """The small embedded dataset's name, built on first use if `make dataset` has not run."""
    from audiocraft_mmd.data import embedded_music as builder
    if not builder.is_built('embedded_music'):
        builder.build(preset='small')
    return 'embedded_music'


def _gloo_process(worker, rank, world, port, queue):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        queue.put((rank, worker(rank, world)))
    finally:
        dist.destroy_process_group()


def run_gloo_workers(worker: tp.Callable[[int, int], tp.Any], world: int = 2) -> tp.Dict[int, tp.Any]:
    """Run `worker(rank, world)` in `world` forked processes joined by a gloo process group.

    Returns:
        rank -> what the worker returned (plain Python values: tensors would travel by shared-memory fds,
        racing with the child's exit).
    """
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=_gloo_process, args=(worker, rank, world, port, queue)) for rank in range(world)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=60) for _ in range(world))
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return results


@pytest.fixture
def gloo_workers():
    """`run_gloo_workers` as a fixture (test modules cannot import each other under importlib mode)."""
    return run_gloo_workers


@pytest.fixture(scope='session', autouse=True)
def interruptible_xps():
    """CI may run pytest as a background job, which starts with SIGINT ignored and passes that on to every process
    it starts: the tests that stop an XP with SIGINT (grids.local) need it delivered, as `python -m grids.local`
    arranges for itself."""
    from grids.local import interruptible_children
    interruptible_children()
