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


def _xp(sig, *argv):
    import types
    return types.SimpleNamespace(sig=sig, argv=list(argv))


def test_only_keeps_the_named_xps_and_the_grid_tokenizers_they_train_on():
    tok1 = _xp('aaaaaaaa', 'solver=compression/x', 'seed=1')
    tok2 = _xp('bbbbbbbb', 'solver=compression/x', 'seed=2')
    lm1 = _xp('cccccccc', 'solver=musicgen/y', 'compression_model_checkpoint="aaaaaaaa"')
    lm2 = _xp('dddddddd', 'solver=musicgen/y', 'compression_model_checkpoint=bbbbbbbb')
    outside = _xp('eeeeeeee', 'solver=musicgen/y', 'compression_model_checkpoint=/some/export')
    xps = [tok1, tok2, lm1, lm2, outside]
    assert local.select(xps, ['cccccccc']) == [tok1, lm1]
    assert local.select(xps, ['eeeeeeee', 'bbbbbbbb']) == [tok2, outside]
    with pytest.raises(ValueError, match='not XPs of this grid: zzzz'):
        local.select(xps, ['cccccccc', 'zzzz'])


def test_committed_epochs_reads_history_and_tolerates_a_missing_or_partial_file(tmp_path):
    assert local.committed_epochs(tmp_path) == 0
    (tmp_path / 'history.json').write_text('[{"train": {}}, {"tr')  # caught while AudioCraft writes it
    assert local.committed_epochs(tmp_path) == 0
    (tmp_path / 'history.json').write_text('[{"train": {}}, {"train": {}}]')
    assert local.committed_epochs(tmp_path) == 2


def test_epochs_stops_each_xp_there_and_lets_its_lms_run(tmp_path, monkeypatch):
    import json
    tok = _xp('aaaaaaaa', 'solver=compression/x')
    lm = _xp('cccccccc', 'solver=musicgen/y', 'compression_model_checkpoint=aaaaaaaa')
    done = _xp('dddddddd', 'solver=musicgen/y', 'seed=3')
    folders = {tuple(xp.argv): tmp_path / xp.sig for xp in (tok, lm, done)}
    for folder in folders.values():
        folder.mkdir()
    (tmp_path / 'dddddddd' / 'history.json').write_text('[{}, {}, {}]')
    started = []

    def fake_run(argv, extra, deadline=None, stop_when=None, poll_s=1.):
        # plays `dora run`: commits one epoch per poll until told to stop, as its SIGINT would
        folder = folders[tuple(argv)]
        started.append(folder.name)
        for epoch in range(1, 100):
            (folder / 'history.json').write_text(json.dumps([{}] * epoch))
            if stop_when():
                return local.STOPPED
        return 0

    monkeypatch.setattr(local, 'grid_xps', lambda name: [tok, lm, done])
    monkeypatch.setattr(local, 'xp_folder', lambda argv, extra: folders[tuple(argv)])
    monkeypatch.setattr(local, 'run_sig', lambda argv, extra: folders[tuple(argv)].name)
    monkeypatch.setattr(local, '_run', fake_run)
    assert local.main(['any', '--epochs', '2', '-j', '1']) == 0
    assert started == ['aaaaaaaa', 'cccccccc']  # the LM ran on its stopped tokenizer; 'dddddddd' had 3 epochs
    assert local.committed_epochs(tmp_path / 'aaaaaaaa') == 2 and local.committed_epochs(tmp_path / 'cccccccc') == 2


def test_an_xp_the_runner_cannot_start_is_reported_at_once_and_skips_its_lms(capsys):
    tok = _xp('aaaaaaaa', 'solver=compression/x')
    lm = _xp('cccccccc', 'solver=musicgen/y', 'compression_model_checkpoint=aaaaaaaa')
    other = _xp('eeeeeeee', 'solver=musicgen/y', 'seed=2')

    def run_one(xp):
        if xp is tok:
            raise RuntimeError('no folder for aaaaaaaa')
        return 0

    assert local.run_with_dependencies([tok, lm, other], run_one, jobs=2) == [
        local.CRASHED, local.DEPENDENCY_FAILED, 0]
    assert 'aaaaaaaa could not be run' in capsys.readouterr().err


def test_a_background_job_still_stops_its_xps(xp_folder):
    import signal
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script gives the runner
    try:
        local.interruptible_children()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert local._run(['1000'], [], stop_when=(xp_folder / 'epoch0').exists, poll_s=0.05) == local.STOPPED
        assert (xp_folder / 'interrupted').exists()  # the stand-in got the SIGINT, not the kill 60 s later
    finally:
        signal.signal(signal.SIGINT, previous)
