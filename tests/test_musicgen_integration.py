"""End to end through `dora run`: a compression_mmd tokenizer, the musicgen_mmd LM on its tokens (1 and 2 CPU
workers, resume), export, loading in plain AudioCraft in a fresh process, and `audiocraft_mmd.generate`."""
import json
import math
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from audiocraft_mmd.env import REPO_ROOT

pytestmark = pytest.mark.slow
TOKENIZER = ['solver=compression/encodec_mmd_debug', 'evaluate.every=1000', 'generate.every=1000']
DESCRIPTION = 'A Bach chorale for pipe organ in F major, 4 voices, moderate tempo.'


def dora(args, dora_dir, check=True, timeout=900):
    env = {**os.environ, 'AUDIOCRAFT_MMD_DORA_DIR': str(dora_dir), 'AUDIOCRAFT_DORA_DIR': str(dora_dir),
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, '-m', 'dora'] + args, cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def sig_of(argv):
    from audiocraft_mmd.train import main
    return main.get_xp(argv).sig


def history(folder):
    return json.loads((Path(folder) / 'history.json').read_text())


@pytest.fixture(scope='module')
def dora_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('dora')


@pytest.fixture(scope='module')
def tokenizer_sig(dora_dir, embedded_music):
    dora(['run'] + TOKENIZER, dora_dir)
    return sig_of(TOKENIZER)


@pytest.fixture(scope='module')
def lm_argv(tokenizer_sig):
    return ['solver=musicgen/musicgen_mmd_debug', f'compression_model_checkpoint={tokenizer_sig}']


@pytest.fixture(scope='module')
def lm_folder(dora_dir, lm_argv):
    dora(['run'] + lm_argv, dora_dir)
    return dora_dir / 'xps' / sig_of(lm_argv)


@pytest.fixture
def in_dora_dir(dora_dir, monkeypatch):
    from audiocraft_mmd.train import main
    monkeypatch.setattr(main.dora, 'dir', Path(dora_dir))
    monkeypatch.setenv('AUDIOCRAFT_MMD_DORA_DIR', str(dora_dir))
    return dora_dir


def test_lm_trains_validates_evaluates_and_generates(lm_folder):
    epochs = history(lm_folder)
    assert len(epochs) == 2
    assert {'ce', 'nll_bits_per_frame', 'ce_q1', 'ce_q4'} <= set(epochs[0]['train'])
    assert {'nll_bits_per_frame', 'codes_tc', 'codes_tc_excess', 'codes_util_min'} <= set(epochs[-1]['valid'])
    assert {'nll_bits_per_frame', 'codes_tc'} <= set(epochs[-1]['evaluate'])
    assert epochs[-1]['train']['nll_bits_per_frame'] < epochs[0]['train']['nll_bits_per_frame']
    assert any(p.stat().st_size > 1000 for p in lm_folder.glob('samples/**/*.wav')), "no generated audio"


def test_two_cpu_workers_log_the_same_keys(lm_argv, lm_folder, tmp_path, embedded_music):
    # the same XP in another Dora folder (the tokenizer XP is copied: the LM names it by signature)
    tokenizer = lm_argv[1].split('=')[1]
    shutil.copytree(lm_folder.parent / tokenizer, tmp_path / 'xps' / tokenizer)
    dora(['run', '-d', '--ddp_workers', '2'] + lm_argv, tmp_path)
    two = history(tmp_path / 'xps' / lm_folder.name)
    one = history(lm_folder)
    assert len(two) == len(one)
    for stage in ('train', 'valid', 'evaluate', 'generate'):
        assert set(two[-1][stage]) == set(one[-1][stage]), stage
    assert sorted(p.name for p in (tmp_path / 'xps' / lm_folder.name).glob('solver.log.*')) == [
        'solver.log.0', 'solver.log.1']


def test_resume_restores_the_lm_and_continues_its_schedule(lm_argv, lm_folder, tmp_path):
    import torch
    dora_dir = tmp_path / 'dora'
    shutil.copytree(lm_folder.parent.parent, dora_dir)
    folder = dora_dir / 'xps' / lm_folder.name
    # as if it stopped after epoch 1: its last checkpoint is epoch 1's
    shutil.copy(folder / 'checkpoint_1.th', folder / 'checkpoint.th')
    (folder / 'history.json').write_text(json.dumps(history(folder)[:1]))
    epoch1 = torch.load(folder / 'checkpoint_1.th', map_location='cpu', weights_only=False)
    dora(['run'] + lm_argv, dora_dir)
    resumed = history(folder)
    assert len(resumed) == 2 and resumed[0] == epoch1['history'][0]
    final = torch.load(folder / 'checkpoint.th', map_location='cpu', weights_only=False)
    # the optimizer went on from epoch 1's state: 2 epochs x 4 updates in all
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {8}
    assert final['tokenizer'] == epoch1['tokenizer']
    assert any(not torch.equal(final['model'][k], epoch1['model'][k]) for k in epoch1['model'])


def test_export_loads_and_generates_in_plain_audiocraft(lm_folder, tmp_path, in_dora_dir):
    from audiocraft_mmd.export import export
    folder = export(lm_folder.name, tmp_path / 'musicgen')
    assert {p.name for p in folder.iterdir()} == {'state_dict.bin', 'compression_state_dict.bin', 'export.json'}
    assert json.loads((folder / 'export.json').read_text())['trained_segment_duration'] == 1.0
    code = (
        "import sys, torch\n"
        "from audiocraft.models import MusicGen\n"
        f"model = MusicGen.get_pretrained({str(folder)!r}, device='cpu')\n"
        "assert 'audiocraft_mmd' not in sys.modules\n"
        "model.set_generation_params(duration=0.5, top_k=32)\n"
        f"wav = model.generate([{DESCRIPTION!r}])\n"
        "print(tuple(wav.shape), model.sample_rate, model.max_duration, float(wav.abs().max()))\n")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd='/')
    assert run.returncode == 0, run.stderr[-3000:]
    shape, sample_rate, max_duration, peak = run.stdout.strip().splitlines()[-1].rsplit(' ', 3)
    assert shape == '(1, 1, 8000)' and sample_rate == '16000' and max_duration == '30.0'
    assert float(peak) > 0


def test_generate_writes_clips_with_their_settings_reproducibly(lm_folder, tmp_path, in_dora_dir):
    from audiocraft_mmd.generate import generate
    first = generate(lm_folder.name, [DESCRIPTION, 'A Mozart string quartet'], duration=0.5, out_dir=tmp_path / 'a',
                     seed=3, progress=False)
    again = generate(str(lm_folder / 'export'), [DESCRIPTION], duration=0.5, out_dir=tmp_path / 'b', seed=3,
                     progress=False)
    assert [p.suffix for p in first] == ['.wav', '.wav']
    settings = json.loads(first[0].with_suffix('.json').read_text())
    assert settings['description'] == DESCRIPTION and settings['seed'] == 3 and settings['duration'] == 0.5
    assert settings['top_k'] == 64 and settings['export']['lm_sig'] == lm_folder.name
    import torch
    from audiocraft.data.audio import audio_read
    assert audio_read(first[0])[0].shape[-1] == 8000
    # same description, seed and settings: the same clip (sampling is seeded; CPU kernels are deterministic)
    same = generate(str(lm_folder / 'export'), [DESCRIPTION], duration=0.5, out_dir=tmp_path / 'c', seed=3,
                    progress=False)
    torch.testing.assert_close(audio_read(same[0])[0], audio_read(again[0])[0])
    other_seed = generate(str(lm_folder / 'export'), [DESCRIPTION], duration=0.5, out_dir=tmp_path / 'd', seed=4,
                          progress=False)
    assert not torch.equal(audio_read(other_seed[0])[0], audio_read(again[0])[0])


def test_bad_generation_requests_are_refused_before_writing(lm_folder, tmp_path, in_dora_dir):
    from audiocraft_mmd.generate import generate
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match='at least one non-empty description'):
        generate(lm_folder.name, [], duration=1., out_dir=out)
    with pytest.raises(ValueError, match='positive number of seconds'):
        generate(lm_folder.name, [DESCRIPTION], duration=0., out_dir=out)
    with pytest.raises(ValueError, match='pass --extend'):
        generate(lm_folder.name, [DESCRIPTION], duration=31., out_dir=out)
    with pytest.raises(ValueError, match='above the codebook size 64'):
        generate(lm_folder.name, [DESCRIPTION], duration=1., out_dir=out, top_k=250)
    with pytest.raises(FileNotFoundError, match='neither an export folder'):
        generate('0123abcd', [DESCRIPTION], duration=1., out_dir=out)
    assert not out.exists()


def test_bad_exports_leave_existing_exports_untouched(lm_folder, tokenizer_sig, tmp_path, in_dora_dir):
    from audiocraft_mmd.export import export, export_musicgen
    folder = export(lm_folder.name, tmp_path / 'musicgen')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match='must be above 18'):
        export(lm_folder.name, folder, max_duration=10)
    with pytest.raises(ValueError, match="is a 'compression_mmd' XP, not an LM"):
        export_musicgen(tokenizer_sig, folder)
    with pytest.raises(FileNotFoundError, match='No checkpoint'):
        export('0123abcd', folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == ['musicgen']  # no staging folder left behind


def test_missing_tokenizer_fails_at_start(dora_dir, tmp_path):
    run = dora(['run', 'solver=musicgen/musicgen_mmd_debug', f'compression_model_checkpoint={tmp_path}/none'],
               dora_dir, check=False)
    assert run.returncode != 0
    assert 'No tokenizer at compression_model_checkpoint=' in run.stderr + run.stdout
    run = dora(['run', 'solver=musicgen/musicgen_mmd_debug', 'compression_model_checkpoint=0123abcd'],
               dora_dir, check=False)
    assert 'there is no XP 0123abcd' in run.stderr + run.stdout


def test_tokenizer_changed_under_an_lm_is_refused_on_resume(dora_dir, tokenizer_sig, tmp_path, in_dora_dir):
    from audiocraft_mmd.export import export
    tokenizer_dir = tmp_path / 'tokenizer'
    export(tokenizer_sig, tokenizer_dir)
    argv = ['solver=musicgen/musicgen_mmd_debug', f'compression_model_checkpoint={tokenizer_dir}',
            'optim.epochs=1', 'evaluate.every=1000', 'generate.every=1000']
    dora(['run'] + argv, dora_dir)
    folder = dora_dir / 'xps' / sig_of(argv)
    checkpoint = (folder / 'checkpoint.th').read_bytes()
    # another tokenizer written over the same folder (here: the same XP's weights, one codeword changed)
    import torch
    package = torch.load(tokenizer_dir / 'compression_state_dict.bin', map_location='cpu', weights_only=False)
    key = next(k for k in package['best_state'] if k.endswith('_codebook.embed'))
    package['best_state'][key][0] += 1.
    torch.save(package, tokenizer_dir / 'compression_state_dict.bin')
    run = dora(['run'] + argv, dora_dir, check=False)
    assert run.returncode != 0
    assert 'trained on another tokenizer' in run.stderr + run.stdout and 'hash' in run.stderr + run.stdout
    assert (folder / 'checkpoint.th').read_bytes() == checkpoint


def test_demo_pipeline_runs_to_clips_and_a_report(tmp_path, embedded_music):
    env = {**os.environ, 'AUDIOCRAFT_MMD_DORA_DIR': str(tmp_path / 'dora'),
           'AUDIOCRAFT_DORA_DIR': str(tmp_path / 'dora'),
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / 'demo'
    run = subprocess.run([sys.executable, '-m', 'audiocraft_mmd.demo', '--quick', '--clip_duration', '1',
                          '--out', str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    clips = sorted(out.glob('samples/*.wav'))
    assert len(clips) == 3 and all(c.with_suffix('.json').exists() for c in clips)
    report = (out / 'REPORT.md').read_text()
    assert 'NLL bits/frame (valid)' in report and 'TC - shuffled' in report and clips[0].name in report
    # the music statistics: one row per clip, numbers for the clip and for its training piece
    for clip in clips:
        description = json.loads(clip.with_suffix('.json').read_text())['description']
        row = next(line for line in report.splitlines() if line.startswith(f'| {description} | '))
        assert len([float(cell) for cell in row.split('|')[2:-1]]) == 4, row
    assert (out / 'tokenizer' / 'compression_state_dict.bin').exists()
    assert {p.name for p in (out / 'musicgen').iterdir()} == {'state_dict.bin', 'compression_state_dict.bin',
                                                              'export.json'}


def test_factorization_diagnostic_on_a_trained_lm(lm_folder, tmp_path, in_dora_dir, one_thread, capsys):
    from audiocraft_mmd import factorization, report
    out = tmp_path / 'cost.json'
    assert factorization.main([str(lm_folder), '--fit', 'train', '--clips', '8', '--valid_clips', '4', '--out',
                               str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['delays'] == [0, 1, 2, 3] and result['lm_sig'] == lm_folder.name and result['fit'] == 'train'
    # 8 clips of 1 s at 50 Hz: 47 complete delay tuples each
    assert result['train_tuples'] == 8 * 47 and result['valid_tuples'] == 4 * 47
    assert result['cost_bits'] == pytest.approx(result['nll_independent_bits'] - result['nll_chained_bits'])
    assert all(math.isfinite(v) for v in result['nll_independent_bits_q'] + result['nll_chained_bits_q'])
    low, high = result['cost_bits_ci95']
    assert low <= high and result['detected'] == (low > 0) and math.isfinite(result['lm_gap_bits'])
    # by signature, cross-fitted on valid segments (the default): the result lands in the XP folder, where the
    # report reads it
    (lm_folder / 'factorization.json').unlink(missing_ok=True)
    assert factorization.main([lm_folder.name, '--clips', '16']) == 0
    saved = json.loads((lm_folder / 'factorization.json').read_text())
    assert saved['fit'] == 'crossfit' and saved['valid_tuples'] == 16 * 47 and saved['pieces'] >= 2
    capsys.readouterr()
    assert report.main([lm_folder.name]) == 0
    table = capsys.readouterr().out
    assert 'factorization cost (bits/frame)' in table and f"{saved['cost_bits']:.3f}" in table
    assert 'cost 95% CI high' in table and f"{saved['cost_bits_ci95'][1]:.3f}" in table
    # at an epoch's checkpoint (what `checkpoint.keep_every_states=2` keeps) and with low-rank tables: its own file
    shutil.copy(lm_folder / 'checkpoint.th', lm_folder / 'checkpoint_2.th')
    assert factorization.main([lm_folder.name, '--epoch', '2', '--rank', '2', '--clips', '16']) == 0
    at_epoch = json.loads((lm_folder / 'factorization_epoch2_rank2.json').read_text())
    assert (at_epoch['epoch'], at_epoch['rank'], at_epoch['lm_sig']) == (2, 2, lm_folder.name)
    assert at_epoch['model'].endswith('export_checkpoint_2')
    capsys.readouterr()
    assert report.main([lm_folder.name, '--epoch', '2', '--rank', '2']) == 0
    assert f"{at_epoch['cost_bits']:.3f}" in capsys.readouterr().out


def test_report_reads_each_lm_as_it_was_at_an_epoch(lm_folder, in_dora_dir):
    from audiocraft_mmd import report, xps
    xp = xps.resolve_targets([lm_folder.name])[0]
    logged = history(lm_folder)
    for epoch in (1, 2):
        row = next(iter(report.collect([xp], report.lm_columns(4), epoch=epoch).values()))[0]
        assert row['epochs'] == epoch
        assert row['valid/nll_bits_per_frame'] == logged[epoch - 1]['valid']['nll_bits_per_frame']


def test_report_plots_the_cost_against_the_tokenizers_dependence(lm_folder, tmp_path, in_dora_dir):
    from audiocraft_mmd import report, xps
    (lm_folder / 'factorization.json').write_text(json.dumps({'cost_bits': 0.25}))  # as the diagnostic writes it
    groups = report.collect([xps.resolve_targets([lm_folder.name])[0]],
                            report.lm_columns(4))
    assert next(iter(groups)).startswith('tokenizer[')  # named by the tokenizer XP's setting, not its signature
    paths = report.plot(groups, tmp_path)
    assert tmp_path / 'cost_vs_tc.png' in paths and (tmp_path / 'cost_vs_tc.png').stat().st_size > 1000


def test_an_lm_xp_given_as_tokenizer_is_named(dora_dir, lm_folder):
    run = dora(['run', 'solver=musicgen/musicgen_mmd_debug', f'compression_model_checkpoint={lm_folder.name}'],
               dora_dir, check=False)
    assert run.returncode != 0
    assert 'Could not load a tokenizer' in run.stderr + run.stdout and 'not an LM XP' in run.stderr + run.stdout


def test_each_checkpoint_file_gets_its_own_export(lm_folder, in_dora_dir):
    from audiocraft_mmd.export import resolve_model
    latest = resolve_model(lm_folder.name)
    earlier = resolve_model(str(lm_folder / 'checkpoint_1.th'))
    assert latest == lm_folder / 'export' and earlier == lm_folder / 'export_checkpoint_1'
    assert json.loads((earlier / 'export.json').read_text())['epochs_trained'] == 1
    assert json.loads((latest / 'export.json').read_text())['epochs_trained'] == 2


def test_an_lm_that_stops_early_runs_its_final_evaluate_and_generate(dora_dir, lm_argv):
    # min_delta 1000: no epoch improves enough, so the plateau is reached at epoch 2 of 10.
    argv = lm_argv + ['optim.epochs=10', 'evaluate.every=1000', 'generate.every=1000',
                      'musicgen_mmd.early_stop.patience=1', 'musicgen_mmd.early_stop.min_delta=1000']
    dora(['run'] + argv, dora_dir)
    folder = dora_dir / 'xps' / sig_of(argv)
    epochs = history(folder)
    assert len(epochs) == 2 and 'evaluate' not in epochs[0]
    assert {'nll_bits_per_frame', 'codes_tc'} <= set(epochs[-1]['evaluate']) and 'generate' in epochs[-1]
    assert any(p.stat().st_size > 1000 for p in folder.glob('samples/**/*.wav')), "no generated audio"
