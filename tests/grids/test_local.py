"""`grids.local._run` stops an XP at a deadline or on an event; a stand-in process plays `dora run` (no training)."""
import subprocess
import sys
import time

import pytest

from grids import local

# The stand-in XP: one 'epoch' file every 0.2 s; on SIGINT (what _run sends) it writes 'interrupted' and exits.
XP = """
import pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
try:
    for epoch in range(int(sys.argv[2])):
        time.sleep(0.2)
        (folder / f'epoch{epoch}').write_text('')
except KeyboardInterrupt:
    (folder / 'interrupted').write_text('')
    sys.exit(1)
"""


@pytest.fixture
def xp_folder(tmp_path, monkeypatch):
    popen = subprocess.Popen

    def stand_in(cmd, *args, **kwargs):  # cmd is `python -m dora run ARGV EXTRA`; here ARGV = [number of epochs]
        return popen([sys.executable, '-c', XP, str(tmp_path), cmd[-1]], *args, **kwargs)

    monkeypatch.setattr(local.subprocess, 'Popen', stand_in)
    return tmp_path


def test_stop_when_stops_the_xp_once_the_event_happened(xp_folder):
    begin = time.monotonic()
    code = local._run(['1000'], [], deadline=time.monotonic() + 600, stop_when=(xp_folder / 'epoch1').exists,
                      poll_s=0.05)
    assert code == local.STOPPED and time.monotonic() - begin < 60
    assert (xp_folder / 'epoch1').exists() and (xp_folder / 'interrupted').exists()
    assert not (xp_folder / 'epoch20').exists()


def test_deadline_alone_still_stops_the_xp(xp_folder):
    assert local._run(['1000'], [], deadline=time.monotonic() + 1) == local.STOPPED
    assert (xp_folder / 'interrupted').exists()


def test_an_xp_that_ends_first_returns_its_code(xp_folder):
    assert local._run(['2'], [], deadline=time.monotonic() + 600, stop_when=lambda: False, poll_s=0.05) == 0
    assert local._run(['2'], [], stop_when=lambda: False, poll_s=0.05) == 0
    assert (xp_folder / 'epoch1').exists() and not (xp_folder / 'interrupted').exists()


def test_past_deadline_runs_nothing(xp_folder):
    assert local._run(['2'], [], deadline=time.monotonic() - 1, stop_when=lambda: True) == local.NOT_RUN
    assert not list(xp_folder.iterdir())


def test_a_failing_stop_condition_does_not_leave_the_xp_running(xp_folder):
    def broken() -> bool:  # once the stand-in runs its loop (a SIGINT before it would write nothing)
        if (xp_folder / 'epoch0').exists():
            raise OSError('cannot tell')
        return False

    with pytest.raises(OSError, match='cannot tell'):
        local._run(['1000'], [], stop_when=broken, poll_s=0.05)
    assert (xp_folder / 'interrupted').exists()


def test_lms_wait_for_the_tokenizer_xp_of_their_grid():
    import threading
    import types
    from grids.local import DEPENDENCY_FAILED, run_with_dependencies
    tok_ok = types.SimpleNamespace(sig='aaaaaaaa', argv=['solver=compression/x', 'seed=1'])
    tok_bad = types.SimpleNamespace(sig='bbbbbbbb', argv=['solver=compression/x', 'seed=2'])
    lm_ok = types.SimpleNamespace(sig='cccccccc', argv=['solver=musicgen/y', 'compression_model_checkpoint="aaaaaaaa"'])
    lm_bad = types.SimpleNamespace(sig='dddddddd', argv=['solver=musicgen/y', 'compression_model_checkpoint=bbbbbbbb'])
    other = types.SimpleNamespace(sig='eeeeeeee', argv=['solver=musicgen/y', 'compression_model_checkpoint=elsewhere'])
    finished, started = [], {}
    release = threading.Event()

    def run_one(xp):
        started[xp.sig] = list(finished)
        if xp is tok_ok:
            release.wait(timeout=10)  # the tokenizer is slow: its LM, free to start on the second worker, must wait
        finished.append(xp.sig)
        return 1 if xp is tok_bad else 0

    threading.Timer(0.3, release.set).start()
    codes = run_with_dependencies([tok_ok, tok_bad, lm_ok, lm_bad, other], run_one, jobs=2)
    assert codes == [0, 1, 0, DEPENDENCY_FAILED, 0]
    assert 'aaaaaaaa' in started['cccccccc']  # started only after its tokenizer finished
    assert 'dddddddd' not in started  # never run: its tokenizer failed
