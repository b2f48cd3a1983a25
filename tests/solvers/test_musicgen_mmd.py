"""The musicgen_mmd solver's checks and measurements on real AudioCraft models (fast tests; no `dora run`)."""
import math

import omegaconf
import pytest
import torch

from audiocraft.models import builders as model_builders
from audiocraft.modules.codebooks_patterns import (DelayedPatternProvider, ParallelPatternProvider,
                                                   UnrolledPatternProvider)

from audiocraft_mmd.export import export_tokenizer
from audiocraft_mmd.solvers.musicgen_mmd import (MusicGenMMDSolver, check_pattern, check_tokenizer_matches_lm,
                                                 missing_offline_weights, pattern_step_delays, tokenizer_info)
from audiocraft_mmd.train import get_solver, main
from audiocraft_mmd.xps import resolve_tokenizer

DEBUG = ['solver=musicgen/musicgen_mmd_debug']


@pytest.fixture(scope='module')
def tokenizer_folder(tmp_path_factory):
    """A compression XP folder holding a real (untrained) debug EnCodec checkpoint, as AudioCraft saves one."""
    cfg = main.get_xp(['solver=compression/encodec_mmd_debug']).cfg
    torch.manual_seed(0)
    model = model_builders.get_compression_model(cfg)
    folder = tmp_path_factory.mktemp('tokenizer_xp')
    torch.save({'best_state': {'model': model.state_dict()}, 'xp.cfg': cfg}, folder / 'checkpoint.th')
    return folder


@pytest.fixture(scope='module')
def exported_tokenizer(tokenizer_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp('tokenizer_export')
    export_tokenizer(str(tokenizer_folder), folder)
    return folder


def lm_cfg(overrides=()):
    return main.get_xp(DEBUG + list(overrides)).cfg


def test_tokenizer_references(tokenizer_folder, exported_tokenizer, tmp_path):
    file = exported_tokenizer / 'compression_state_dict.bin'
    assert resolve_tokenizer(str(exported_tokenizer)) == f'//pretrained/{file}'
    assert resolve_tokenizer(str(file)) == f'//pretrained/{file}'
    assert resolve_tokenizer(str(tokenizer_folder)) == str(tokenizer_folder / 'checkpoint.th')
    assert resolve_tokenizer('//pretrained/facebook/encodec_32khz') == '//pretrained/facebook/encodec_32khz'
    with pytest.raises(FileNotFoundError, match='there is no XP 0123abcd'):
        resolve_tokenizer('0123abcd')
    with pytest.raises(FileNotFoundError, match='export'):
        resolve_tokenizer(str(tmp_path / 'nothing_here'))


def test_tokenizer_lm_mismatch_names_both_sides(tokenizer_folder):
    from audiocraft.solvers.compression import CompressionSolver
    tokenizer = CompressionSolver.model_from_checkpoint(tokenizer_folder / 'checkpoint.th')
    check_tokenizer_matches_lm(lm_cfg(), tokenizer, 'tok')  # the debug LM matches the debug tokenizer
    for overrides, expected in [(['transformer_lm.card=32'], 'has 64 codes per codebook but the LM predicts '
                                  'transformer_lm.card=32: set transformer_lm.card=64'),
                                (['transformer_lm.n_q=8'],
                                 'gives 4 codebooks but the LM predicts transformer_lm.n_q=8'),
                                (['sample_rate=32000'], 'runs at 16000 Hz but sample_rate=32000'),
                                (['codebooks_pattern.delay.delays=[0,1,2]'],
                                 r'codebooks_pattern.delay.delays=\[0, 1, 2\] has 3 entries but the tokenizer gives 4'),
                                (['codebooks_pattern.modeling=unroll', 'codebooks_pattern.unroll.flattening=[0,1]'],
                                 'codebooks_pattern.unroll.flattening')]:
        with pytest.raises(ValueError, match=expected):
            check_tokenizer_matches_lm(lm_cfg(overrides), tokenizer, 'tok')


def test_unknown_pattern_is_named():
    cfg = lm_cfg()
    cfg.codebooks_pattern.modeling = 'valle'
    with pytest.raises(ValueError, match="codebooks_pattern.modeling='valle' is unknown"):
        check_pattern(cfg, 4)


def test_one_step_tuple_of_audiocraft_patterns():
    assert pattern_step_delays(DelayedPatternProvider(4), 4) == [0, 1, 2, 3]
    assert pattern_step_delays(DelayedPatternProvider(4, delays=[0, 2, 4, 6]), 4) == [0, 2, 4, 6]
    assert pattern_step_delays(ParallelPatternProvider(4), 4) == [0, 0, 0, 0]
    assert pattern_step_delays(UnrolledPatternProvider(4), 4) == []  # one codebook per step: nothing factorized


def test_missing_offline_weights_are_named_at_start():
    cfg = main.get_xp(['solver=musicgen/musicgen_mmd_32khz']).cfg
    problems = '\n'.join(missing_offline_weights(cfg))
    for fix in ('evaluate.metrics.fad=false', 'evaluate.metrics.kld=false',
                'evaluate.metrics.text_consistency=false', 'conditioners.description.model=lut'):
        assert fix in problems
    # before anything is built (no dataset, no tokenizer, no Dora XP needed)
    with pytest.raises(RuntimeError, match='Missing before training starts'):
        MusicGenMMDSolver(cfg)
    for solver in ('musicgen_mmd_small', 'musicgen_mmd_debug'):
        assert missing_offline_weights(main.get_xp([f'solver=musicgen/{solver}']).cfg) == []


@pytest.fixture(scope='module')
def solver(tokenizer_folder, embedded_music):
    xp = main.get_xp(DEBUG + [f'compression_model_checkpoint={tokenizer_folder}'])
    torch.manual_seed(0)
    with xp.enter():
        return get_solver(xp.cfg)


def test_solver_records_its_tokenizer(solver, tokenizer_folder):
    assert solver.tokenizer['reference'] == str(tokenizer_folder)
    assert solver.tokenizer == {**tokenizer_info(solver.compression_model), 'reference': str(tokenizer_folder)}
    assert solver.measure_delays == [0, 1, 2, 3]
    assert solver.state_dict()['tokenizer']['cardinality'] == 64


def test_resuming_on_another_tokenizer_is_refused(solver):
    state = solver.state_dict()
    other = {**state, 'tokenizer': {**state['tokenizer'], 'hash': '0' * 40, 'frame_rate': 25.}}
    with pytest.raises(RuntimeError, match='trained on another tokenizer') as info:
        solver.load_state_dict(other)
    assert 'frame_rate: checkpoint 25.0, now 50.0' in str(info.value)
    solver.load_state_dict(state)  # its own state loads


def test_valid_logs_bits_per_frame_and_the_tuple_dependence(solver, one_thread):
    with torch.no_grad():
        metrics = solver.run_stage('valid', solver.valid)
    assert metrics['nll_bits_per_frame'] == pytest.approx(metrics['ce'] * 4 / math.log(2), rel=1e-5)
    assert metrics['nll_bits_per_frame'] == pytest.approx(
        sum(metrics[f'ce_q{k}'] for k in range(1, 5)) / math.log(2), rel=1e-5)
    # on the frames every pattern scores: for this delay LM, fewer than its own (T - k for codebook k)
    assert math.isfinite(metrics['nll_bits_per_frame_common'])
    # codes of 8 valid clips of 1 s at 50 Hz, counted on the delay tuple (T - 3 tuples per clip)
    assert metrics['codes_num_samples'] == 8 * (50 - 3)
    assert {'codes_tc', 'codes_tc_excess', 'codes_util_min', 'codes_mi_12'} <= set(metrics)
    assert not solver._collect_codes


@pytest.mark.parametrize('special_token', [False, True])
def test_padded_frames_stay_out_of_the_dependence_counts(solver, one_thread, special_token):
    # A segment kept at half its length (AudioCraft's min_segment_ratio) is padded with zeros: with AudioCraft's
    # default (no special token) its padded frames used to be counted; with the special token, its id reached
    # the counts and valid failed with a ValueError.
    audio, infos = next(iter(solver.dataloaders['valid']))
    infos[0].n_frames = infos[0].n_frames // 2
    real = math.floor(infos[0].n_frames / infos[0].sample_rate * 50)
    solver.cfg.tokens.padding_with_special_token = special_token
    solver.dependence = solver._new_dependence()
    solver._collect_codes = True
    solver.model.eval()
    try:
        with torch.no_grad():
            solver._prepare_tokens_and_attributes((audio, infos))
    finally:
        solver._collect_codes = False
        solver.cfg.tokens.padding_with_special_token = False
    assert real < 50 and solver.dependence.num_samples == (len(infos) - 1) * (50 - 3) + (real - 3)


def test_measure_pattern_of_an_unroll_lm_is_the_delay_tuple(tokenizer_folder, embedded_music):
    xp = main.get_xp(DEBUG + [f'compression_model_checkpoint={tokenizer_folder}', 'codebooks_pattern.modeling=unroll'])
    with xp.enter():
        solver = get_solver(xp.cfg)
    assert solver.measure_delays == [0, 1, 2, 3]
    cfg = omegaconf.OmegaConf.merge(xp.cfg, {'musicgen_mmd': {'measure_pattern': 'parallel'}})
    with xp.enter():
        assert get_solver(cfg).measure_delays == [0, 0, 0, 0]
    cfg.musicgen_mmd.measure_pattern = 'unroll'
    with pytest.raises(ValueError, match="measure_pattern='unroll' is unknown"):
        MusicGenMMDSolver(cfg)


def test_early_stop_on_a_valid_plateau():
    from audiocraft_mmd.solvers.musicgen_mmd import plateaued
    history = [{'valid': {'nll_bits_per_frame': v}} for v in (10., 9., 8.995, 8.999, 9.2)]
    assert not plateaued(history, patience=0, min_delta=0.01)
    assert plateaued(history, patience=3, min_delta=0.01)  # 9.0 then nothing 0.01 better for 3 epochs
    assert not plateaued(history, patience=3, min_delta=0.001)  # 8.995 improved on 9.0 by more than 0.001
    assert not plateaued(history[:3], patience=3, min_delta=0.01)  # too short to tell
    assert plateaued(history + [{'train': {}}], patience=3, min_delta=0.01)  # epochs without valid are skipped


def test_export_refuses_an_lm_on_fewer_codebooks_than_its_tokenizer(tokenizer_folder, tmp_path):
    from audiocraft_mmd.export import export_musicgen
    out = tmp_path / 'export'
    out.mkdir()
    (out / 'keep.txt').write_text('written before')
    cfg = lm_cfg([f'compression_model_checkpoint={tokenizer_folder}', 'compression_model_n_q=2',
                  'transformer_lm.n_q=2'])
    checkpoint = tmp_path / 'checkpoint.th'
    torch.save({'xp.cfg': cfg}, checkpoint)
    with pytest.raises(ValueError, match=r'first 2 of its tokenizer.s 4 codebooks \(compression_model_n_q=2\)'):
        export_musicgen(str(checkpoint), out, package={'xp.cfg': cfg})
    assert [p.name for p in out.iterdir()] == ['keep.txt']  # nothing already written is lost


def test_export_of_an_lm_on_small_codebooks_says_how_to_sample_it(exported_tokenizer):
    # 64 codes per codebook, below MusicGen's default top_k of 250: plain MusicGen.generate would fail.
    from audiocraft.models import CompressionModel
    from audiocraft_mmd.export import check_exportable_lm
    tokenizer = CompressionModel.get_pretrained(str(exported_tokenizer / 'compression_state_dict.bin'), device='cpu')
    with pytest.warns(UserWarning, match=r'set_generation_params\(top_k=64\)'):
        check_exportable_lm(lm_cfg(), tokenizer, 'debug')
    big = lm_cfg(['transformer_lm.card=256'])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_exportable_lm(big, tokenizer, 'small')  # 256 codes: MusicGen's defaults work, nothing to say


def test_the_epoch_that_stops_early_runs_the_final_stages(solver):
    # Valid at the plateau for the first time in this epoch (pending, not yet committed): evaluate and generate run
    # now, since AudioCraft's loop stops before the next epoch. Before it, only AudioCraft's own rule applies.
    history, pending, early_stop = solver.history, solver._pending_metrics, solver.cfg.musicgen_mmd.early_stop
    old = (list(history), dict(pending), early_stop.patience, solver.cfg.evaluate.every, solver.cfg.generate.every)
    try:
        solver.cfg.evaluate.every = solver.cfg.generate.every = 1000
        early_stop.patience = 2
        history[:] = [{'valid': {'nll_bits_per_frame': v}} for v in (10., 9., 9.5)]
        pending.clear()
        pending['valid'] = {'nll_bits_per_frame': 9.8}  # 2 epochs without improving on 9.0: plateau now
        assert solver.should_run_stage('evaluate') and solver.should_run_stage('generate')
        pending['valid'] = {'nll_bits_per_frame': 8.0}  # still improving: AudioCraft's rule only
        assert not solver.should_run_stage('evaluate') and not solver.should_run_stage('generate')
    finally:
        history[:] = old[0]
        pending.clear()
        pending.update(old[1])
        early_stop.patience, solver.cfg.evaluate.every, solver.cfg.generate.every = old[2:]


def test_common_frames_nll_is_the_same_whatever_frames_a_pattern_drops():
    from audiocraft_mmd.solvers.musicgen_mmd import common_frames_nll_bits
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 10, 8, generator=g)
    targets = torch.randint(0, 8, (2, 4, 10), generator=g)
    full = torch.ones(2, 4, 10, dtype=torch.bool)
    delay = full.clone()
    for k in range(4):  # keep_only_valid_steps: a delay LM has no step for codebook k's last k frames
        delay[:, k, 10 - k:] = False
    value = common_frames_nll_bits(logits, targets, full)
    assert float(value) == pytest.approx(float(common_frames_nll_bits(logits, targets, delay)))
    expected = sum(torch.nn.functional.cross_entropy(logits[:, k, :7].reshape(-1, 8), targets[:, k, :7].reshape(-1))
                   for k in range(4)) / math.log(2)  # frames [0, T - (K - 1)) = [0, 7)
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
