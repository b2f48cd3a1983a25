"""End to end through `dora run` on the embedded music: training, resume, 2 CPU workers, export, plain loading."""
import json
import math
import os
from pathlib import Path
import subprocess
import sys

import pytest

from audiocraft_mmd.env import REPO_ROOT

pytestmark = pytest.mark.slow
DEBUG = ['solver=compression/encodec_mmd_debug']


@pytest.fixture(scope='module')
def dora_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('dora')


def dora(args, dora_dir, timeout=900):
    env = {**os.environ, 'AUDIOCRAFT_MMD_DORA_DIR': str(dora_dir), 'AUDIOCRAFT_DORA_DIR': str(dora_dir),
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, '-m', 'dora'] + args, cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def xp_folder(dora_dir, argv):
    from audiocraft_mmd.train import main
    return Path(dora_dir) / 'xps' / main.get_xp(argv).sig


def history(folder):
    return json.loads((folder / 'history.json').read_text())


@pytest.fixture(scope='module')
def trained(dora_dir, embedded_music):
    dora(['run'] + DEBUG, dora_dir)
    return xp_folder(dora_dir, DEBUG)


def test_debug_run_logs_the_term_and_the_codes_dependence(trained):
    epochs = history(trained)
    assert len(epochs) == 2
    assert {'mmd', 'mmd_weight', 'ppl_q1', 'l1'} <= set(epochs[0]['train'])
    assert {'mmd', 'codes_tc', 'codes_mi_mean'} <= set(epochs[-1]['valid'])
    assert {'sisnr', 'codes_tc'} <= set(epochs[-1]['evaluate'])
    # ViSQOL through visqol-python (no binary): a MOS-LQO on its 1-5 scale.
    assert 1. <= epochs[-1]['evaluate']['visqol'] <= 5.
    # AudioCraft writes samples as mp3 through ffmpeg: this checks the ffmpeg wiring too.
    assert any(p.stat().st_size > 1000 for p in trained.glob('samples/*/*.mp3')), "no generated audio"


def test_rerun_resumes_instead_of_restarting(trained, dora_dir):
    import torch
    before = torch.load(trained / 'checkpoint.th', map_location='cpu', weights_only=False)
    assert before['mmd_state']['step'] == 2 * 16  # 2 epochs x 16 updates
    dora(['run'] + DEBUG, dora_dir)
    assert len(history(trained)) == 2
    after = torch.load(trained / 'checkpoint.th', map_location='cpu', weights_only=False)
    assert after['mmd_state'] == before['mmd_state']


def test_export_loads_in_plain_audiocraft(trained, tmp_path):
    from audiocraft_mmd.export import export_tokenizer
    exported = export_tokenizer(str(trained), tmp_path / 'tokenizer')  # an XP folder; a sig works in outputs/
    # A fresh process that never imports audiocraft_mmd.
    code = (
        "import sys, torch\n"
        "from audiocraft.models import CompressionModel\n"
        f"model = CompressionModel.get_pretrained({str(exported)!r})\n"
        "assert 'audiocraft_mmd' not in sys.modules\n"
        "x = torch.randn(1, 1, model.sample_rate)\n"
        "codes, scale = model.encode(x)\n"
        "y = model.decode(codes, scale)\n"
        "print(codes.shape[1], y.shape[-1], model.sample_rate)\n")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd='/')
    assert run.returncode == 0, run.stderr[-3000:]
    num_codebooks, length, sample_rate = map(int, run.stdout.split()[-3:])
    assert num_codebooks == 4 and sample_rate == 16000 and length >= sample_rate


def test_solver_from_sig_restores_the_trained_model(trained, dora_dir, monkeypatch):
    import torch
    from audiocraft_mmd.train import get_solver_from_sig, main
    monkeypatch.setattr(main.dora, 'dir', Path(dora_dir))
    solver = get_solver_from_sig(trained.name)
    state = torch.load(trained / 'checkpoint.th', map_location='cpu', weights_only=False)
    for key, value in state['best_state']['model'].items():
        torch.testing.assert_close(solver.model.state_dict()[key], value)
    assert solver.mmd_state == state['mmd_state']


def test_calibrate_measures_every_kernel_on_a_trained_xp(trained, dora_dir, monkeypatch, capsys):
    from audiocraft_mmd import calibrate
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', Path(dora_dir))
    values = calibrate.kernel_values(trained.name, batches=2)
    assert set(values) == {'multiscale_gaussian', 'gaussian', 'inverse_quadratic', 'linear', 'quadratic'}
    assert all(math.isfinite(v) for v in values.values())
    # The linear kernel's MMD(joint, product of marginals) is 0 in expectation whatever the codes (equal means);
    # with self pairs removed on standardized samples the estimate is a negative constant of order K*D/N, never a
    # signal: its scale stays 1. (At 2 debug batches the other values are noise-dominated: only signs of the
    # scale rule are checked.)
    assert values['linear'] <= 1e-6
    scales = calibrate.kernel_scales(values)
    assert scales['linear'] == 1.
    for kernel, value in values.items():
        assert scales[kernel] == (pytest.approx(1. / value) if value > 0 else 1.)
    assert calibrate.main([trained.name, '--batches', '1']) == 0
    assert "'inverse_quadratic':" in capsys.readouterr().out


def test_objectives_measures_every_stream_and_normalizer_on_a_trained_xp(trained, dora_dir, monkeypatch, capsys,
                                                                          tmp_path):
    from audiocraft_mmd import objectives
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', Path(dora_dir))
    measured = objectives.measure(trained.name, batches=2, rows=64)
    assert measured['clips'] == 8 and measured['samples'] == 8 * (25 - 4)  # 0.5 s at 50 Hz, K = 4 cropped
    assert measured['rec_grad'] > 0
    terms = {(t['stream'], t['normalization']): t for t in measured['terms']}
    assert set(terms) == {(s, n) for s in ('codeword', 'residual', 'input') for n in ('samples', 'clips')}
    for (stream, normalization), term in terms.items():
        assert math.isfinite(term['value']) and term['grad_per_weight'] > 0
    # The kernel readings: each component's mean kernel value is a probability-like mass in (0, 1].
    assert set(measured['kernel_mass']) == {"variance (authors' code)", "radius (paper's text)", 'median heuristic'}
    assert all(0 < v <= 1 for pairs in measured['kernel_mass'].values() for _, v in pairs)
    out = tmp_path / 'objectives.md'
    assert objectives.main([trained.name, '--batches', '1', '--rows', '32', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '| residual | clips |' in printed and out.read_text() == printed


def test_authors_preset_on_the_debug_config_logs_the_term_and_the_gradient_ratio(dora_dir, embedded_music):
    # The done criterion of the authors' objective: 32 updates, one term step (every 32), logged with its ratio.
    argv = DEBUG + ['mmd=authors', 'generate.every=1000', 'evaluate.every=1000']
    dora(['run'] + argv, dora_dir)
    epochs = history(xp_folder(dora_dir, argv))
    train = epochs[-1]['train']
    assert train['mmd_weight'] == 1000. and train['mmd'] > 0
    assert train['mmd_grad_ratio'] == pytest.approx(train['mmd_grad_norm'] / train['rec_grad_norm'], rel=1e-6)
    assert 'mmd_grad_ratio' not in epochs[0]['train']  # the first 16 updates hold no term step
    assert {'mmd', 'codes_tc', 'codes_util_min'} <= set(epochs[-1]['valid'])


def test_report_tabulates_a_trained_xp_and_draws_its_mi_heatmap(trained, dora_dir, monkeypatch, capsys,
                                                                 tmp_path):
    from audiocraft_mmd import report
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', Path(dora_dir))
    assert report.main([trained.name, '--out', str(tmp_path), '--per-xp', '--per-epoch', 'valid/codes_util_min',
                        '--per-epoch', 'evaluate/sisnr']) == 0
    out = capsys.readouterr().out
    # main table, per-XP table, then each per-epoch table under a line naming its metric
    util_caption, util_table, sisnr_caption, sisnr_table = out.split('\n\n')[2:6]
    assert (util_caption, sisnr_caption) == ('`valid/codes_util_min` per epoch:', '`evaluate/sisnr` per epoch:')
    epochs = history(trained)
    util_cells = util_table.splitlines()[2].split(' | ')[2:]
    assert len(util_cells) == len(epochs)
    assert util_cells[0] == f"{epochs[0]['valid']['codes_util_min']:.2f}"
    assert f"{-epochs[-1]['evaluate']['sisnr']:.2f} |" in sisnr_table  # flipped back like the main table
    header, _, row = out.splitlines()[:3]
    per_xp_header, _, per_xp_row = out.split('\n\n')[1].splitlines()[:3]
    assert per_xp_row.startswith(row.split(' |')[0]) and ', 2036 |' in per_xp_row  # AudioCraft's default seed
    assert 'ViSQOL' in header and 'SI-SNR (dB)' in header and trained.name in row
    # SI-SNR is reported as SI-SNR (AudioCraft logs its negation).
    assert f"{-epochs[-1]['evaluate']['sisnr']:.2f}" in row
    assert f"{epochs[-1]['evaluate']['visqol']:.2f}" in row
    assert (tmp_path / f'mi_{trained.name}.png').stat().st_size > 1000
    # the debug XP back-propagates the term (weight 1): its valid term against its codes' TC, per epoch
    assert (tmp_path / 'term_vs_tc.png').stat().st_size > 1000


def test_two_cpu_workers(dora_dir, embedded_music):
    argv = DEBUG + ['generate.every=1000', 'evaluate.every=1000', 'optim.epochs=1']
    dora(['run', '-d', '--ddp_workers', '2'] + argv, dora_dir)
    folder = xp_folder(dora_dir, argv)
    epochs = history(folder)
    assert len(epochs) == 1
    assert {'mmd', 'codes_tc'} <= set(epochs[0]['valid'])
    logs = sorted(folder.glob('solver.log.*'))
    assert [p.name for p in logs] == ['solver.log.0', 'solver.log.1']


def test_two_cpu_workers_with_the_authors_objective(dora_dir, embedded_music):
    # residual streams, the clip normalizer and the buffered schedule on 2 gloo workers: each takes its term on its
    # own macro batch at the same step, and the skip decision is all-reduced
    argv = DEBUG + ['mmd=authors', 'generate.every=1000', 'evaluate.every=1000']
    dora(['run', '-d', '--ddp_workers', '2'] + argv, dora_dir)
    epochs = history(xp_folder(dora_dir, argv))
    assert len(epochs) == 2 and epochs[-1]['train']['mmd_nonfinite'] == 0
    assert epochs[-1]['train']['mmd'] > 0 and epochs[-1]['train']['mmd_grad_ratio'] > 0
    assert {'mmd', 'codes_tc'} <= set(epochs[-1]['valid'])


@pytest.fixture
def trained_copy(trained, dora_dir, tmp_path, monkeypatch):
    """The trained debug XP in a Dora folder of its own (evaluate --commit writes to its history)."""
    import shutil
    from audiocraft_mmd.train import main
    copy = tmp_path / 'dora'
    shutil.copytree(dora_dir, copy)
    monkeypatch.setattr(main.dora, 'dir', copy)
    return copy / 'xps' / trained.name


def test_evaluate_remeasures_and_commits_only_when_asked(trained_copy):
    from audiocraft_mmd.evaluate import evaluate_xp
    before = history(trained_copy)
    checkpoint = (trained_copy / 'checkpoint.th').read_bytes()
    measured = evaluate_xp(trained_copy.name, visqol=False)
    assert history(trained_copy) == before
    committed = evaluate_xp(trained_copy.name, commit=True, visqol=False)
    after = history(trained_copy)
    assert after[:-1] == before and set(after[-1]) == {'evaluate'}
    assert after[-1]['evaluate']['codes_tc'] == committed['codes_tc']
    # the same model on the same held-out clips: the codes' statistics are deterministic on CPU
    assert committed['codes_tc'] == pytest.approx(measured['codes_tc'], abs=1e-9)
    assert 'visqol' not in committed and math.isfinite(committed['sisnr'])
    assert (trained_copy / 'checkpoint.th').read_bytes() == checkpoint


@pytest.fixture
def real_music_preset(tmp_path, monkeypatch):
    """Where `dset=audio/real_music` finds a built preset: the repository's (`make dataset-real`), else, as in a
    fresh clone, a tiny one built from the synthetic packages of tests/data/test_real_music.py (no apt-get, no
    network) in a folder the test then runs from (the dset's manifest paths are relative to the working folder;
    the embedded preset is linked there)."""
    import importlib.util
    from audiocraft_mmd.data import real_music
    if real_music.is_built(root=REPO_ROOT):
        return REPO_ROOT
    # Test modules cannot import each other under importlib mode: load its helpers from the file.
    spec = importlib.util.spec_from_file_location('_real_music_test_helpers',
                                                  REPO_ROOT / 'tests' / 'data' / 'test_real_music.py')
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    debs = tmp_path / 'debs'
    debs.mkdir()
    packages = helpers._synthetic(debs)
    for name, package in packages.items():
        monkeypatch.setitem(real_music.PACKAGES, name, package)
    real_music.build(packages=list(packages), out=tmp_path, debs=debs, workers=1, verbose=False)
    (tmp_path / 'egs' / 'embedded_music').symlink_to(REPO_ROOT / 'egs' / 'embedded_music')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_evaluate_on_another_dataset_preset_writes_its_own_file(trained_copy, real_music_preset, capsys):
    from audiocraft_mmd import evaluate, report
    before = history(trained_copy)
    own = evaluate.evaluate_xp(trained_copy.name, visqol=False)
    real = evaluate.evaluate_xp(trained_copy.name, visqol=False, dset='audio/real_music')
    assert history(trained_copy) == before  # a cross-domain result is never an entry of the XP's history
    record = json.loads((trained_copy / 'evaluate_audio_real_music.json').read_text())
    assert (record['sig'], record['dset'], record['epochs']) == (trained_copy.name, 'audio/real_music', 2)
    assert record['evaluate_manifest'] == str(real_music_preset / 'egs' / 'real_music' / 'evaluate')
    assert record['evaluate'] == pytest.approx(real) and {'codes_tc', 'sisnr'} <= set(real)
    assert real['sisnr'] != pytest.approx(own['sisnr'])
    # the XP's own preset: the same-domain row, computed the same way, is its own evaluation
    same = evaluate.evaluate_xp(trained_copy.name, visqol=False, dset='audio/embedded_music')
    for key in ('codes_tc', 'codes_mi_mean', 'sisnr'):
        assert same[key] == pytest.approx(own[key], rel=1e-6, abs=1e-9), key
    assert json.loads((trained_copy / 'evaluate_audio_embedded_music.json').read_text())['evaluate'] == \
        pytest.approx(same)
    capsys.readouterr()
    assert evaluate.main(['--no_visqol', '--dset', 'audio/real_music', trained_copy.name]) == 0
    out, err = capsys.readouterr()
    assert f"| {trained_copy.name} | " in out and 'evaluate_audio_real_music.json' in err
    assert history(trained_copy) == before
    assert report.main([trained_copy.name, '--dset', 'audio/real_music']) == 0
    row = capsys.readouterr().out.splitlines()[2]
    real = json.loads((trained_copy / 'evaluate_audio_real_music.json').read_text())['evaluate']
    assert f"| {-real['sisnr']:.2f} |" in row and f"| {real['codes_tc']:.3f} |" in row


def test_evaluate_without_checkpoint_says_how_to_resume(trained_copy):
    from audiocraft_mmd.evaluate import evaluate_xp
    (trained_copy / 'checkpoint.th').unlink()
    with pytest.raises(FileNotFoundError, match='Resume it'):
        evaluate_xp(trained_copy.name, visqol=False)


def test_local_deadline_stops_a_running_xp_and_evaluates_its_last_checkpoint(embedded_music, tmp_path, monkeypatch):
    import time
    from grids import local
    monkeypatch.setenv('AUDIOCRAFT_MMD_DORA_DIR', str(tmp_path))
    monkeypatch.setenv('AUDIOCRAFT_DORA_DIR', str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    # 1000 epochs of 4 updates, stopped once the first epoch is committed (an event, not a fixed time: a slow machine
    # only waits longer); the 15-minute deadline is a safety net (a debug epoch takes seconds here). AudioCraft writes
    # checkpoint.th, then history.json: waiting for both keeps a SIGINT out of the first epoch's gap between the two.
    argv = DEBUG + ['optim.epochs=1000', 'evaluate.every=1000', 'generate.every=1000']
    sig = local.run_sig(argv, ['evaluate.metrics.visqol=false'])
    folder = tmp_path / 'xps' / sig

    def first_epoch_committed() -> bool:
        return (folder / 'checkpoint.th').exists() and (folder / 'history.json').exists()

    code = local._run(argv, ['evaluate.metrics.visqol=false'], deadline=time.monotonic() + 900,
                      stop_when=first_epoch_committed)
    assert code == local.STOPPED and first_epoch_committed(), "no epoch committed in 15 min"
    import torch
    # AudioCraft saves the checkpoint before history.json: a SIGINT between the two leaves history.json one
    # epoch behind the checkpoint, which is what a resume (and the evaluation) starts from
    trained_epochs = torch.load(folder / 'checkpoint.th', map_location='cpu', weights_only=False)['history']
    logged = history(folder)
    assert 1 <= len(trained_epochs) < 1000 and len(trained_epochs) - len(logged) in (0, 1)
    assert logged == trained_epochs[:len(logged)] and 'evaluate' not in trained_epochs[-1]
    assert local._evaluate(sig) == 0
    evaluated = history(folder)
    assert evaluated[:-1] == trained_epochs and 'codes_tc_excess' in evaluated[-1]['evaluate']
    assert local._run(argv, [], deadline=time.monotonic() - 1) == local.NOT_RUN


def test_evaluate_an_exported_tokenizer_like_its_checkpoint(trained_copy, tmp_path):
    from audiocraft_mmd.evaluate import evaluate_xp
    from audiocraft_mmd.export import export_tokenizer
    exported = export_tokenizer(str(trained_copy / 'checkpoint.th'), tmp_path / 'export')
    from_checkpoint = evaluate_xp(trained_copy.name, visqol=False)
    (trained_copy / 'checkpoint.th').unlink()  # an XP trained elsewhere: history here, weights exported
    from_export = evaluate_xp(trained_copy.name, visqol=False, tokenizer=str(exported))
    # the export holds the best state, which the checkpoint's evaluation swaps in: same weights, same clips
    for key in ('codes_tc', 'codes_mi_mean', 'sisnr'):
        assert from_export[key] == pytest.approx(from_checkpoint[key], rel=1e-6, abs=1e-9), key
    with pytest.raises(ValueError, match='not with --tokenizer'):
        evaluate_xp(trained_copy.name, commit=True, tokenizer=str(exported))
    import torch
    not_a_tokenizer = tmp_path / 'checkpoint_like.th'
    torch.save({'model': {}}, not_a_tokenizer)
    with pytest.raises(ValueError, match='not an exported tokenizer'):
        evaluate_xp(trained_copy.name, visqol=False, tokenizer=str(not_a_tokenizer))
