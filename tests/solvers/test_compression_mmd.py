"""The compression_mmd solver on real AudioCraft models and the embedded music (fast tests; no `dora run`)."""
import contextlib
import functools
import sys
import types

import pytest
import torch

from audiocraft.quantization.core_vq import EuclideanCodebook

from audiocraft_mmd.solvers.compression_mmd import (CompressionMMDSolver, _expire_codes_and_reset_stats,
                                                    quantize_streams, resolve_delays)
from audiocraft_mmd.train import get_solver, main

DEBUG = ['solver=compression/encodec_mmd_debug']


def make_solver(overrides=(), seed=0, solver_name=None):
    xp = main.get_xp(DEBUG + list(overrides))
    cfg = xp.cfg
    if solver_name is not None:
        cfg.solver = solver_name
    torch.manual_seed(seed)
    with xp.enter():
        return get_solver(cfg)


def train_batch(solver):
    """Put `solver` in its train stage, as `run_stage('train', ...)` would, and return one training batch."""
    solver.model.train()
    solver._current_stage = 'train'
    solver.rng = torch.Generator()
    solver.rng.manual_seed(0)
    return next(iter(solver.dataloaders['train']))


def least_used_usage(codes, bins):
    """Perplexity / bins of the least-used codebook over the codes [B, K, T] (computed here independently)."""
    usages = []
    for k in range(codes.shape[1]):
        probs = torch.bincount(codes[:, k].flatten(), minlength=bins).float() / codes[:, k].numel()
        usages.append(float(torch.exp(-(probs * probs.clamp(min=1e-12).log()).sum())) / bins)
    return min(usages)


@pytest.fixture(scope='module')
def solver(embedded_music):
    return make_solver(['rvq.q_dropout=false'])


@contextlib.contextmanager
def streams_seen_by_the_term(solver):
    """Yield a list that collects (detached copies of) the streams `solver._term` is called with."""
    captured, original = [], solver._term

    def spy(streams, with_grad):
        captured.append(streams.detach().clone())
        return original(streams, with_grad)
    solver._term = spy
    try:
        yield captured
    finally:
        solver._term = original


def test_hooks_capture_exactly_the_stage_outputs(solver):
    x = train_batch(solver)
    solver.model.eval()
    with streams_seen_by_the_term(solver) as captured, torch.no_grad():
        qres = solver.model.quantizer(solver.model.encoder(x), solver.model.frame_rate)
    streams = captured[0]
    rvq = solver.model.quantizer.vq
    assert streams.shape[:2] == (x.shape[0], len(rvq.layers))
    # Each stage's vector is the codeword of that stage's code, and the stages sum to the quantized output.
    for k, layer in enumerate(rvq.layers):
        torch.testing.assert_close(streams[:, k], layer.decode(qres.codes[:, k]))
    torch.testing.assert_close(streams.sum(dim=1), qres.x, atol=1e-5, rtol=1e-5)
    # The side-effect-free re-quantization used by the paper schedule agrees with the forward pass.
    with torch.no_grad():
        again, codes = quantize_streams(rvq, solver.model.encoder(x))
    assert torch.equal(codes, qres.codes)
    torch.testing.assert_close(again, streams)


@pytest.mark.parametrize('stream', ['codeword', 'residual', 'input'])
def test_term_gradient_reaches_the_encoder_only(embedded_music, stream):
    # Unclamped, so that the value (and its gradient) is non-zero whatever its sign on this batch.
    solver = make_solver(['rvq.q_dropout=false', 'mmd.bandwidth=median', 'mmd.clamp=false', f'mmd.stream={stream}'])
    x = train_batch(solver)
    for layer in solver.model.quantizer.vq.layers:
        layer.commitment_weight = 0.  # no other gradient in the forward
    solver.mmd_state['usage_reached_at'] = 0
    solver.model.zero_grad(set_to_none=True)
    qres = solver.model(x)  # the quantizer's hook back-propagates the weighted term during the forward
    assert qres.metrics['mmd'] != 0
    encoder_grad = sum(p.grad.abs().sum().item() for p in solver.model.encoder.parameters() if p.grad is not None)
    assert encoder_grad > 0 and torch.isfinite(torch.tensor(encoder_grad))
    # Nothing else: the decoder and the quantizer (its codebooks are EMA buffers) get no gradient.
    for part in (solver.model.decoder, solver.model.quantizer):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in part.parameters())


@pytest.mark.parametrize('stream', ['residual', 'input'])
def test_residual_streams_are_the_embedding_minus_the_cumulative_codewords(solver, stream):
    x = train_batch(solver)
    solver.model.eval()
    solver.mmd_cfg.stream = stream
    try:
        with streams_seen_by_the_term(solver) as captured, torch.no_grad():
            emb = solver.model.encoder(x)
            qres = solver.model.quantizer(emb, solver.model.frame_rate)
            again, _ = quantize_streams(solver.model.quantizer.vq, emb, stream)
    finally:
        solver.mmd_cfg.stream = 'codeword'
    rvq = solver.model.quantizer.vq
    codewords = torch.stack([layer.decode(qres.codes[:, k]) for k, layer in enumerate(rvq.layers)], dim=1)
    cumulative = codewords.cumsum(dim=1)  # sum_{j <= k} q_j
    if stream == 'input':  # sum_{j < k} q_j
        cumulative = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)
    expected = emb[:, None] - cumulative
    torch.testing.assert_close(captured[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)  # the paper schedule's re-quantization


def test_weight_zero_matches_audiocraft_compression_solver(embedded_music):
    overrides = ['mmd.weight=0', 'mmd.restart_dead_codes=false', 'rvq.q_dropout=false']
    ours = make_solver(overrides, seed=7)
    theirs = make_solver(overrides, seed=7, solver_name='compression')
    assert type(ours) is CompressionMMDSolver and type(theirs) is not CompressionMMDSolver
    batches = []
    loader = iter(ours.dataloaders['train'])
    for _ in range(3):
        batches.append(next(loader))
    for solver in (ours, theirs):
        train_batch(solver)
        torch.manual_seed(11)
        for idx, batch in enumerate(batches):
            metrics = solver.run_step(idx, batch, {})
        assert torch.isfinite(metrics['l1'])
    ours_state, theirs_state = ours.model.state_dict(), theirs.model.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key in ours_state:
        torch.testing.assert_close(ours_state[key], theirs_state[key], msg=key)


def test_metrics_logged_in_training_and_dropout_below_two_codebooks_gives_zero(embedded_music):
    solver = make_solver(['rvq.q_dropout=true'])
    x = train_batch(solver)
    seen_zero = False
    for idx in range(12):  # q_dropout draws n_q in [1, 4]: one active codebook shows up in a few steps
        metrics = solver.run_step(idx, x, {})
        assert {'mmd', 'mmd_weight', 'ppl_q1'} <= set(metrics)  # ppl of the active codebooks only
        seen_zero = seen_zero or float(metrics['mmd']) == 0.
    assert seen_zero


def test_delays_come_from_the_pattern_or_fail_clearly(embedded_music):
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({'delays': None, 'pattern': 'delay'})
    assert resolve_delays(cfg, 4) == [0, 1, 2, 3]
    cfg.pattern = 'parallel'
    assert resolve_delays(cfg, 4) == [0, 0, 0, 0]
    cfg.pattern = 'unroll'
    with pytest.raises(ValueError, match='mmd.pattern'):
        resolve_delays(cfg, 4)
    with pytest.raises(ValueError, match='has 3 entries but the quantizer has 4 codebooks'):
        make_solver(['mmd.delays=[0,1,2]'])


def test_dependence_is_measured_on_the_lm_pattern_whatever_the_term_pattern(embedded_music):
    solver = make_solver(['mmd.pattern=parallel'])
    assert solver.delays == [0, 0, 0, 0] and solver._new_dependence().delays == [0, 1, 2, 3]
    solver = make_solver(['mmd.pattern=parallel', 'mmd.measure_pattern=null'])
    assert solver._new_dependence().delays == [0, 0, 0, 0]


@pytest.mark.parametrize('override, message', [
    ('mmd.kernel=cosine', 'mmd.kernel'),
    ('mmd.estimator=magic', 'mmd.estimator'),
    ('mmd.schedule=sometimes', 'mmd.schedule'),
    ('mmd.measure_pattern=unroll', r"mmd.measure_pattern='unroll' is unknown"),
    ('mmd.warmup.guard=1.5', r'mmd.warmup.guard=1.5 is a usage \(perplexity / bins\) in \[0, 1\)'),
    # AudioCraft's default threshold with the debug batch (400 frames / 64 bins = 1.56... per code and step)
    ('rvq.threshold_ema_dead_code=2', r'Lower it, e.g. rvq.threshold_ema_dead_code=0.16'),
    ('mmd.stream=latent', r"mmd.stream='latent' is unknown: use one of \['codeword', 'residual', 'input'\]"),
    ('mmd.normalization=frames', r"mmd.normalization='frames' is unknown: use one of \['samples', 'clips'\]"),
    ('mmd.delay_crop=all', r"mmd.delay_crop='all' is unknown"),
    ('mmd.bandwidth_unit=sigma', r"mmd.bandwidth_unit='sigma' is unknown"),
    (['mmd.normalization=clips', 'mmd.estimator=dhsic'], r"Invalid mmd config .*normalization='clips' .*needs "
                                                         r"estimator='permutation'"),
    (['mmd.normalization=clips', 'mmd.gather=true'], r"Invalid mmd config .*cannot be combined"),
    (['mmd.bandwidth_unit=radius', 'mmd.bandwidth=median'], r'mmd.bandwidth_unit=radius .* no meaning'),
    (['mmd.delay_crop=num_codebooks', 'mmd.delays=[0,0,0,5]'], r'use mmd.delay_crop=max_delay'),
])
def test_config_errors_are_clear(embedded_music, override, message):
    with pytest.raises(ValueError, match=message):
        make_solver(override if isinstance(override, list) else [override])


# The authors' objective, point by point (facebookresearch/audiocraft PR #465 as shipped; see config/mmd/authors.yaml).
AUTHORS_OBJECTIVE = {
    'weight': 1000., 'stream': 'residual', 'normalization': 'clips', 'estimator': 'permutation',
    'kernel': 'multiscale_gaussian', 'bandwidths': None, 'bandwidth': 'fixed', 'bandwidth_unit': 'variance',
    'scale': 1., 'standardize': True, 'std_eps': 1e-8, 'std_correction': 1, 'clamp': True, 'max_samples': None,
    'gather': False, 'pattern': 'delay', 'delays': None, 'delay_crop': 'num_codebooks', 'schedule': 'paper',
    'paper_every': 32, 'warmup': {'min_usage': 0., 'steps': 0, 'guard': 0.},
}


@pytest.mark.parametrize('config', ['encodec_mmd', 'encodec_mmd_small', 'encodec_mmd_small_v2', 'encodec_mmd_debug'])
def test_authors_preset_gives_the_authors_objective_on_every_solver_config(config):
    from omegaconf import OmegaConf
    from audiocraft_mmd.solvers.compression_mmd import OBJECTIVE_KEYS
    argv = [f'solver=compression/{config}'] + ([] if config == 'encodec_mmd' else ['mmd=authors'])
    mmd = OmegaConf.to_container(main.get_xp(argv).cfg.mmd, resolve=True)
    for key, value in AUTHORS_OBJECTIVE.items():
        if key == 'warmup':
            assert {k: mmd['warmup'][k] for k in value} == value, config
        else:
            assert mmd[key] == value, (config, key)
    # Every objective key is set by the preset: nothing of the solver file's own block can leak into it.
    assert set(OBJECTIVE_KEYS) - {'num_features'} == set(AUTHORS_OBJECTIVE)


def test_loss_schedule_changes_the_balanced_weight_at_the_listed_update(embedded_music):
    # The debug config balances l1 alone without gradient balancing: the effective loss is weight x l1.
    solver = make_solver(['+loss_schedule.l1=[[2,0.25],[3,0.5]]', 'mmd.weight=0'])
    x = train_batch(solver)
    metrics = [solver.run_step(idx, x, {}) for idx in range(4)]
    weights = [1., 1., 0.25, 0.5]
    assert [m['loss_weight_l1'] for m in metrics] == weights
    for m, weight in zip(metrics, weights):
        assert float(m['g_loss']) == pytest.approx(weight * float(m['l1']), rel=1e-6)
    # Updates count over the whole run (epoch and index, so a resumed run is on schedule): epoch 2 is past update 3.
    solver.history.append({})
    assert solver.run_step(0, x, {})['loss_weight_l1'] == 0.5
    # Valid and evaluate are not training: the balancer is not used there and nothing is logged.
    solver.model.eval()
    solver._current_stage = 'valid'
    assert 'loss_weight_l1' not in solver.run_step(0, x, {})


def test_no_loss_schedule_logs_nothing_and_keeps_audiocraft_weights(embedded_music):
    solver = make_solver(['mmd.weight=0'])
    x = train_batch(solver)
    assert 'loss_weight_l1' not in solver.run_step(5, x, {}) and solver.balancer.weights == {'l1': 1.}


@pytest.mark.parametrize('override, message', [
    ('+loss_schedule.msspec=[[10,1.0]]', r"only the balanced losses can be scheduled.*\['l1'\]"),
    ('+loss_schedule.l1=0.1', r"must be a list of \[update, weight\] pairs"),
    ('+loss_schedule.l1=[[10,0.1],[5,1.0]]', r"strictly increasing"),
    ('+loss_schedule.l1=[[10,-0.1]]', r"must be >= 0"),
    ('+loss_schedule.l1=[[10,0.0]]', r"from update 10 every balanced loss has weight 0.*Keep one loss above 0"),
])
def test_loss_schedule_errors_are_clear(embedded_music, override, message):
    with pytest.raises(ValueError, match=message):
        make_solver([override])


def test_loss_schedule_turns_a_loss_off_while_another_stays_balanced(embedded_music):
    solver = make_solver(['losses.msspec=1', '+loss_schedule.l1=[[1,0.0]]', 'mmd.weight=0'])
    x = train_batch(solver)
    first, second = solver.run_step(0, x, {}), solver.run_step(1, x, {})
    assert first['loss_weight_l1'] == 1. and second['loss_weight_l1'] == 0.
    # Without gradient balancing the effective loss is the weighted sum: l1 is out of it from update 1 on.
    assert float(first['g_loss']) == pytest.approx(float(first['l1']) + float(first['msspec']), rel=1e-6)
    assert float(second['g_loss']) == pytest.approx(float(second['msspec']), rel=1e-6)


def test_radius_reading_squares_the_bandwidths(embedded_music):
    assert make_solver(['mmd.bandwidth_unit=radius']).loss_options['bandwidths'] == pytest.approx(
        [0.01, 1., 25., 100., 400., 2500.])
    assert make_solver([]).loss_options['bandwidths'] is None  # the kernel's defaults, read as variances


def test_gradient_diagnostic_is_logged_and_leaves_training_unchanged(embedded_music):
    # log_every=1 measures every step; log_every=1000 only the first: the models must end bit-identical.
    states, logged, batches = [], [], None
    for log_every in (1, 1000):
        solver = make_solver(['rvq.q_dropout=false', 'mmd.bandwidth=median', 'mmd.clamp=false',
                              f'mmd.log_every={log_every}'], seed=3)
        solver.mmd_state['usage_reached_at'] = 0
        if batches is None:
            loader = iter(solver.dataloaders['train'])
            batches = [next(loader) for _ in range(3)]
        train_batch(solver)
        torch.manual_seed(5)
        logged.append([solver.run_step(idx, batch, {}) for idx, batch in enumerate(batches)])
        states.append(solver.model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert all('mmd_grad_ratio' in m for m in logged[0])
    assert [('mmd_grad_ratio' in m) for m in logged[1]] == [True, False, False]
    for metrics in logged[0]:
        assert metrics['mmd_grad_norm'] > 0 and metrics['rec_grad_norm'] > 0
        assert metrics['mmd_grad_ratio'] == pytest.approx(metrics['mmd_grad_norm'] / metrics['rec_grad_norm'])


def test_gradient_diagnostic_is_off_at_weight_zero(embedded_music):
    solver = make_solver(['mmd.weight=0', 'mmd.log_every=1'])
    x = train_batch(solver)
    assert 'mmd_grad_ratio' not in solver.run_step(0, x, {})


def test_paper_schedule_takes_the_term_every_n_steps(embedded_music):
    solver = make_solver(['mmd.schedule=paper', 'mmd.paper_every=3', 'rvq.q_dropout=false', 'mmd.clamp=false',
                          'mmd.bandwidth=median'])
    x = train_batch(solver)
    metrics = [solver.run_step(idx, x, {}) for idx in range(6)]
    assert [float(m['mmd']) != 0 for m in metrics] == [False, False, True, False, False, True]
    # Every term step measures the gradient diagnostic (whatever log_every), and only those.
    assert [('mmd_grad_ratio' in m) for m in metrics] == [False, False, True, False, False, True]


def test_paper_schedule_at_weight_zero_neither_buffers_nor_re_encodes(embedded_music):
    # Nothing to back-propagate: measured like the per-step schedule (first step, then every log_every-th), so that
    # a weight-0 step of the authors' preset costs AudioCraft's.
    solver = make_solver(['mmd=authors', 'mmd.weight=0', 'mmd.log_every=2', 'mmd.paper_every=2',
                          'rvq.q_dropout=false'])
    x = train_batch(solver)
    metrics = [solver.run_step(idx, x, {}) for idx in range(4)]
    assert [('mmd' in m) for m in metrics] == [True, False, True, False]
    assert len(solver._paper_buffer) == 0 and not any('mmd_grad_ratio' in m for m in metrics)


@pytest.mark.parametrize('stream', ['codeword', 'residual'])
def test_paper_schedule_streams_reach_the_encoder_through_checkpointing(embedded_music, stream):
    solver = make_solver(['mmd.schedule=paper', 'mmd.paper_every=2', 'rvq.q_dropout=false', 'mmd.clamp=false',
                          f'mmd.stream={stream}', 'mmd.normalization=clips', 'mmd.delay_crop=num_codebooks'])
    x = train_batch(solver)
    solver.run_step(0, x, {})
    metrics = solver.run_step(1, x, {})
    assert float(metrics['mmd']) != 0 and metrics['mmd_grad_norm'] > 0


def test_warmup_waits_for_codebook_usage(embedded_music):
    solver = make_solver(['mmd.warmup.min_usage=1.01', 'mmd.warmup.steps=4'])  # unreachable usage
    x = train_batch(solver)
    assert all(float(solver.run_step(i, x, {})['mmd_weight']) == 0 for i in range(2))
    solver.mmd_cfg.warmup.min_usage = 1e-6
    weights = [float(solver.run_step(i, x, {})['mmd_weight']) for i in range(6)]
    assert weights[0] == 0. and 0 < weights[2] < solver.mmd_cfg.weight and weights[-1] == solver.mmd_cfg.weight


def test_usage_guard_pauses_the_term_while_usage_within_a_batch_is_low(embedded_music):
    solver = make_solver(['rvq.q_dropout=false', 'mmd.warmup.steps=2', 'mmd.warmup.guard=1e-6',
                          'mmd.warmup.usage_decay=0.'])  # decay 0: the guard reads this batch's usage
    x = train_batch(solver)
    full = solver.mmd_cfg.weight
    metrics = [solver.run_step(i, x, {}) for i in range(3)]
    assert [float(m['mmd_weight']) for m in metrics] == [0., full / 2, full]
    # The guard's measure: the least-used codebook's perplexity / bins over the codes of this batch.
    solver.model.train()
    qres = solver.model(x)
    bins = solver.model.quantizer.vq.layers[0].codebook_size
    expected = least_used_usage(qres.codes, bins)
    assert float(qres.metrics['mmd_batch_usage']) == pytest.approx(expected, rel=1e-5)
    solver.mmd_cfg.warmup.guard = 0.999  # no batch reaches it: the term pauses, counted once
    assert [float(solver.run_step(i, x, {})['mmd_weight']) for i in range(4, 6)] == [0., 0.]
    assert solver.mmd_state['paused'] and solver.mmd_state['pauses'] == 1
    solver.mmd_cfg.warmup.guard = 1e-6  # recovered: the ramp starts again
    assert [float(solver.run_step(i, x, {})['mmd_weight']) for i in range(6, 9)] == [0., full / 2, full]
    assert not solver.mmd_state['paused'] and solver.mmd_state['pauses'] == 1


def test_without_the_guard_the_gate_stays_open(embedded_music):
    solver = make_solver(['rvq.q_dropout=false', 'mmd.warmup.min_usage=1e-6'])
    x = train_batch(solver)
    assert float(solver.run_step(0, x, {})['mmd_weight']) == solver.mmd_cfg.weight
    solver.mmd_cfg.warmup.min_usage = 1.01  # usage is now below the warm-up threshold
    metrics = solver.run_step(1, x, {})
    assert float(metrics['mmd_weight']) == solver.mmd_cfg.weight and 'mmd_batch_usage' not in metrics


def test_warmup_usage_counts_the_codes_frames_pick_not_the_ema_cluster_sizes(embedded_music):
    # min_usage 1 needs perfectly uniform use: uniform EMA cluster sizes reach it, the codes of one batch cannot.
    solver = make_solver(['rvq.q_dropout=false', 'mmd.warmup.usage_decay=0.', 'mmd.warmup.min_usage=1.0'])
    x = train_batch(solver)
    bins = solver.model.quantizer.vq.layers[0].codebook_size
    for layer in solver.model.quantizer.vq.layers:
        layer._codebook.cluster_size.fill_(10.)  # the EMA says: every code equally used (as after restarts)
    solver.model.train()
    qres = solver.model(x)
    # With decay 0 the histogram is this batch's codes: usage = the least-used codebook's batch perplexity / bins.
    expected = least_used_usage(qres.codes, bins)
    assert solver.codebook_usage() == pytest.approx(expected, rel=1e-5)
    # The gate stays shut although the EMA cluster sizes are uniform (their usage reads exactly 1.0).
    assert expected < 1.0
    assert float(qres.metrics['mmd_weight']) == 0. and solver.mmd_state['usage_reached_at'] is None


def test_restarted_dead_codes_keep_their_new_value():
    torch.manual_seed(0)
    samples = torch.randn(512, 8) + 10.  # the batch lives around +10

    def run(patched):
        torch.manual_seed(1)
        codebook = EuclideanCodebook(dim=8, codebook_size=16, kmeans_init=False, decay=0.99)
        codebook.embed[:4] = -100.  # four dead codes far from the data: no sample picks them
        codebook.cluster_size.fill_(5.)
        codebook.cluster_size[:4] = 0.5  # EMA count under threshold_ema_dead_code = 2
        codebook.embed_avg.copy_(codebook.embed * codebook.cluster_size[:, None])
        if patched:
            codebook.expire_codes_ = types.MethodType(_expire_codes_and_reset_stats, codebook)
        codebook.train()
        codebook(samples)
        return codebook.embed[:4]

    # AudioCraft's own replacement is overwritten in the same step: the dead codes are back at -100.
    torch.testing.assert_close(run(patched=False), torch.full((4, 8), -100.), atol=1e-3, rtol=1e-3)
    # With the statistics reset they keep the batch samples they were replaced with (around +10).
    restarted = run(patched=True)
    assert restarted.mean() > 5 and restarted.min() > 0


@pytest.mark.parametrize('grace', [0, 1, 3])
def test_an_unpicked_restarted_code_keeps_its_value_for_exactly_its_grace(grace):
    """Issue 19: on AudioCraft's own codebook, over consecutive training steps. Three live codes hold the data (a
    large EMA count: they barely move); code 3 is dead and is restarted at step 0 onto the only point of that batch,
    Q, far from the data; no later frame picks it. It must keep Q for exactly `grace` steps, then be replaced."""
    q = torch.tensor([-50., 50.])
    live = torch.tensor([[0., 0.], [10., 0.], [0., 10.]])
    codebook = EuclideanCodebook(dim=2, codebook_size=4, kmeans_init=False, decay=0.99)  # dead code threshold 2
    codebook.embed.copy_(torch.cat([live, torch.tensor([[-100., -100.]])]))
    codebook.cluster_size.copy_(torch.tensor([1000., 1000., 1000., 0.5]))
    codebook.embed_avg.copy_(codebook.embed * codebook.cluster_size[:, None])
    codebook.expire_codes_ = types.MethodType(functools.partial(_expire_codes_and_reset_stats, grace=grace),
                                              codebook)
    codebook.train()
    codebook(q.repeat(64, 1))  # step 0: code 3 restarted onto Q
    assert float(codebook.restarted_codes) == 1.
    torch.testing.assert_close(codebook.embed[3], q, rtol=1e-3, atol=1e-3)
    data = live.repeat(32, 1)  # the data: each frame at a live code, so Q is never picked
    for step in range(1, grace + 2):
        codebook(data)
        replaced = step == grace + 1
        assert float(codebook.restarted_codes) == float(replaced), step
        assert torch.allclose(codebook.embed[3], q, rtol=1e-3, atol=1e-3) != replaced, (step, codebook.embed[3])


def test_restart_grace_must_be_a_step_count(embedded_music):
    with pytest.raises(ValueError, match="mmd.restart_grace=-1"):
        make_solver(['mmd.restart_grace=-1'])


def test_visqol_without_its_package_fails_at_start_with_the_fix(embedded_music, monkeypatch):
    monkeypatch.setitem(sys.modules, 'visqol', None)
    with pytest.raises(ImportError, match='pip install visqol-python'):
        make_solver(['evaluate.metrics.visqol=true'])


# --- non-finite terms -------------------------------------------------------------------------------------------
def inject_into_term(solver, value=float('nan'), stage=1, when=lambda: True):
    """Forward hook on the quantizer, run before the solver's own: puts `value` into one entry of stage `stage`'s
    output as the term sees it (the reconstruction stays finite, so only the term can poison the encoder). Mid-clip:
    the first and last frames of a stage can fall outside the delay-aligned tuples."""
    def hook(module, inputs, output):
        stages = solver._stages  # (input residual, output) per stage; the term's default stream is the output
        if module.training and len(stages) > stage and when():
            stage_input, stage_output = stages[stage]
            bad = torch.zeros_like(stage_output)
            bad[0, 0, bad.shape[-1] // 2] = value
            stages[stage] = (stage_input, stage_output + bad)  # keeps the straight-through gradient path
    return solver.model.quantizer.register_forward_hook(hook, prepend=True)


def encoder_is_finite(solver):
    return all(torch.isfinite(p).all() for p in solver.model.encoder.parameters())


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_nonfinite_term_is_skipped_logged_and_training_goes_on(embedded_music, bad):
    solver = make_solver(['rvq.q_dropout=false'])
    x = train_batch(solver)
    handle = inject_into_term(solver, bad)
    try:
        metrics = solver.run_step(0, x, {})
    finally:
        handle.remove()
    assert encoder_is_finite(solver), "the non-finite term was back-propagated into the encoder"
    assert torch.isfinite(metrics['penalty'])  # the commitment loss only
    # Counted, and left out of `mmd`: one NaN there would make the epoch's mean NaN.
    assert float(metrics['mmd_nonfinite']) == 1. and 'mmd' not in metrics
    assert solver._nonfinite_run == 1
    metrics = solver.run_step(1, x, {})  # training goes on, with the term again
    assert float(metrics['mmd_nonfinite']) == 0. and torch.isfinite(metrics['mmd']) and solver._nonfinite_run == 0
    assert encoder_is_finite(solver)


def test_consecutive_nonfinite_terms_stop_the_run_with_the_named_error(embedded_music):
    from audiocraft_mmd.solvers.compression_mmd import NonFiniteTermError
    solver = make_solver(['rvq.q_dropout=false', 'mmd.max_nonfinite=3'])
    x = train_batch(solver)
    clean = {'step': False}
    handle = inject_into_term(solver, when=lambda: not clean['step'])
    try:
        for idx in range(2):
            solver.run_step(idx, x, {})
        clean['step'] = True  # a finite term in between starts the count again
        solver.run_step(2, x, {})
        clean['step'] = False
        for idx in range(3, 5):
            solver.run_step(idx, x, {})
        assert solver._nonfinite_run == 2
        with pytest.raises(NonFiniteTermError, match=r'3 consecutive training steps \(mmd.max_nonfinite=3\), '
                                                    r'the last at step 6 .*value nan') as error:
            solver.run_step(5, x, {})
    finally:
        handle.remove()
    message = str(error.value)
    for cause_or_option in ['diverging encoder', 'fp16', 'collapsed codebook', 'mmd.max_nonfinite=0',
                            'mmd.warmup.guard']:
        assert cause_or_option in message
    assert encoder_is_finite(solver)


def test_nonfinite_terms_never_stop_with_limit_zero_nor_when_not_back_propagated(embedded_music):
    for overrides in (['mmd.max_nonfinite=0'], ['mmd.max_nonfinite=1', 'mmd.weight=0', 'mmd.log_every=1']):
        solver = make_solver(['rvq.q_dropout=false'] + overrides)
        x = train_batch(solver)
        handle = inject_into_term(solver)
        try:
            flags = [float(solver.run_step(idx, x, {})['mmd_nonfinite']) for idx in range(3)]
        finally:
            handle.remove()
        assert flags == [1., 1., 1.] and encoder_is_finite(solver), overrides


def _nonfinite_on_one_rank_worker(rank, world):
    solver = make_solver(['rvq.q_dropout=false', 'mmd.max_nonfinite=0'])
    x = train_batch(solver)
    step = {'idx': 0}
    # Only rank 1 sees a NaN, at its second step.
    handle = inject_into_term(solver, when=lambda: rank == 1 and step['idx'] == 1)
    flags, values = [], []
    for idx in range(3):
        step['idx'] = idx
        metrics = solver.run_step(idx, x, {})
        flags.append(float(metrics['mmd_nonfinite']))
        values.append(float(metrics['mmd']) if 'mmd' in metrics else float('nan'))
    handle.remove()
    checksum = sum(float(p.double().sum()) for p in solver.model.encoder.parameters())
    import flashy
    return {'flags': flags, 'finite_values': [v == v for v in values],
            'encoder_finite': bool(encoder_is_finite(solver)), 'checksum': checksum,
            'world': flashy.distrib.world_size()}


def test_nonfinite_term_on_one_rank_is_skipped_on_both(embedded_music, gloo_workers):
    results = gloo_workers(_nonfinite_on_one_rank_worker, 2)
    assert results[0]['world'] == results[1]['world'] == 2
    # The same decision on both ranks, in the same step: skipped there, kept elsewhere.
    assert results[0]['flags'] == results[1]['flags'] == [0., 1., 0.]
    assert results[0]['finite_values'] == [True, True, True] and results[1]['finite_values'] == [True, False, True]
    assert results[0]['encoder_finite'] and results[1]['encoder_finite']
    assert results[0]['checksum'] == pytest.approx(results[1]['checksum'], rel=1e-6)


def test_an_epoch_with_a_nonfinite_term_still_has_a_finite_mean(embedded_music):
    import flashy
    solver = make_solver(['rvq.q_dropout=false', 'mmd.max_nonfinite=0'])
    x = train_batch(solver)
    handle = inject_into_term(solver, when=lambda: solver.mmd_state['step'] == 2)
    average = flashy.averager()
    try:
        for idx in range(3):
            mean = average(solver.run_step(idx, x, {}))
    finally:
        handle.remove()
    assert mean['mmd_nonfinite'] == pytest.approx(1 / 3) and torch.isfinite(torch.tensor(mean['mmd']))


def _valid_terms_worker(rank, world):
    # gather=true, and a valid shard one batch longer on rank 0: a gathered valid term would wait forever there.
    solver = make_solver(['rvq.q_dropout=false', 'mmd.gather=true'])
    x = train_batch(solver)
    solver.model.eval()
    values = []
    with torch.no_grad():
        for _ in range(2 if rank == 0 else 1):
            values.append(float(solver.model(x).metrics['mmd']))
    return {'values': values}


def test_valid_never_gathers_so_uneven_shards_do_not_hang(embedded_music, gloo_workers):
    results = gloo_workers(_valid_terms_worker, 2)  # raises queue.Empty after 60 s if a worker hangs
    assert len(results[0]['values']) == 2 and len(results[1]['values']) == 1


# --- the weight-0 hot path --------------------------------------------------------------------------------------
def test_weight_zero_measures_the_term_only_every_log_every_steps(embedded_music):
    solver = make_solver(['rvq.q_dropout=false', 'mmd.weight=0', 'mmd.log_every=4', 'mmd.warmup.min_usage=0.5',
                          'mmd.warmup.guard=0.1'])  # gate and guard are moot at weight 0: no histograms
    x = train_batch(solver)
    calls = {'term': 0, 'counts': 0}
    term, counts = solver._term, solver._batch_code_counts

    def count_term(*args, **kwargs):
        calls['term'] += 1
        return term(*args, **kwargs)

    def count_counts(*args, **kwargs):
        calls['counts'] += 1
        return counts(*args, **kwargs)
    solver._term, solver._batch_code_counts = count_term, count_counts
    logged = []
    for idx in range(9):
        metrics = solver.run_step(idx, x, {})
        logged.append('mmd' in metrics)
        assert ('ppl_q1' in metrics) == ('mmd' in metrics) == ('mmd_nonfinite' in metrics)
        assert float(metrics['mmd_weight']) == 0. and 'mmd_batch_usage' not in metrics
    assert logged == [True, False, False, False, True, False, False, False, True]
    assert calls == {'term': 3, 'counts': 3}  # the logged steps' term and ppl_q{k}, nothing else
    assert float(solver._code_counts.sum()) == 0.  # no usage histogram kept
    solver.history.append({})  # a new epoch: its first step is measured
    try:
        assert 'mmd' in solver.run_step(0, x, {})
    finally:
        solver.history.pop()
    # Valid measures the term on every batch.
    solver.model.eval()
    with torch.no_grad():
        assert 'mmd' in solver.model(x).metrics
    assert calls['term'] == 5


def test_log_every_and_max_nonfinite_are_checked(embedded_music):
    with pytest.raises(ValueError, match='mmd.log_every=0 must be >= 1'):
        make_solver(['mmd.log_every=0'])
    with pytest.raises(ValueError, match='mmd.max_nonfinite=-1 must be >= 0'):
        make_solver(['mmd.max_nonfinite=-1'])


def test_evaluate_skips_the_term_it_would_drop_and_valid_still_logs_it(embedded_music):
    # AudioCraft's evaluate stage keeps only the reconstructions; the term over whole tracks is O(frames^2).
    solver = make_solver(['rvq.q_dropout=false', 'evaluate.metrics.visqol=false'])
    term = solver._term
    calls = []

    def count_term(*args, **kwargs):
        calls.append(solver._in_evaluate)
        return term(*args, **kwargs)
    solver._term = count_term
    metrics = solver.run_stage('evaluate', solver.evaluate)
    assert calls == [] and not solver._in_evaluate
    assert {'sisnr', 'codes_tc', 'codes_util_min'} <= set(metrics) and 'mmd' not in metrics
    x = next(iter(solver.dataloaders['valid']))
    solver.model.eval()
    with torch.no_grad():
        assert 'mmd' in solver.model(x).metrics
    assert calls == [False]
