"""EnCodec training with an independence-promoting term on the residual-VQ codebooks (arXiv 2406.02315).

The model stays vanilla AudioCraft (an exported tokenizer loads in plain AudioCraft). Everything this solver adds
is attached from the outside with forward hooks, so AudioCraft's `CompressionSolver.run_step` runs unchanged:
- a hook on each RVQ stage records the stage's input residual and output (the chosen codeword, straight-through
  to that input, hence to the encoder only);
- a hook on the quantizer turns those into [B, K, D, T] streams (`mmd.stream`: the codewords, the residuals after
  each stage or the stages' inputs; every one sends its gradient to the encoder only), computes
  `independence_loss` on the tuple the LM samples in one step (delays of the decoding pattern) and
  back-propagates `weight * value` at once, OUTSIDE AudioCraft's loss balancer (the balancer differentiates
  w.r.t. output audio, which a latent term cannot go through), before AudioCraft's own backward passes, into the
  same optimizer step: what the authors' code did, and what lets the gradient diagnostic read the term's own
  encoder gradient (`mmd_grad_ratio`) for free.

Hot path: a step computes only what it needs. The term is computed with its gradient on every step it is
back-propagated (effective weight > 0); otherwise (weight 0, warm-up gate shut, guard paused) only every
`mmd.log_every`-th training step, for the logs. The usage histogram is kept only while the warm-up gate needs it,
the batch histogram only when the guard or a logged step needs it. A back-propagated term is checked for
non-finite values (one host sync and, with several workers, one all-reduce of a flag, so that every worker
skips the same terms) and skipped when it is not finite; `mmd.max_nonfinite` consecutive skips stop the run.
"""
from collections import deque
import dataclasses
import functools
import types
import typing as tp

import flashy
import omegaconf
import torch

from audiocraft.modules.codebooks_patterns import DelayedPatternProvider, ParallelPatternProvider
from audiocraft.quantization import QuantizedResult
from audiocraft.solvers.compression import CompressionSolver
from audiocraft.utils.utils import dict_from_config

from ..losses import ESTIMATORS, KERNELS, NORMALIZATIONS, check_options, independence_loss
from ..metrics import CodebookDependence, PythonViSQOL
from .dependence import DependenceStages

# Patterns whose one-step tuple is (q_1[t - d_1], ..., q_K[t - d_K]): the delays they imply, from AudioCraft itself.
PATTERN_DELAYS: tp.Dict[str, tp.Callable[[int], tp.List[int]]] = {
    'delay': lambda n_q: list(DelayedPatternProvider(n_q).delays),
    'parallel': lambda n_q: list(ParallelPatternProvider(n_q).delays),
}
SCHEDULES = ('per_step', 'paper')
# The vector codebook k stands for in the term (see `stage_stream`). All send their gradient to the encoder only.
STREAMS = ('codeword', 'residual', 'input')
# Leading steps of the delayed tuples dropped: max(delays) (the first without a padded frame), or K (the authors').
DELAY_CROPS = ('max_delay', 'num_codebooks')
# How `mmd.bandwidths` (or the kernel's defaults) are read for Gaussian kernels with fixed bandwidths: variances a
# in exp(-d / 2a) (the authors' code), or radii sigma in exp(-d / 2 sigma^2) (the paper's text): a = sigma^2.
BANDWIDTH_UNITS = ('variance', 'radius')
# `mmd` keys that define the objective: an `mmd=` preset sets all of them, and a solver file's own `mmd:` block
# sets none of them (it would override the preset, applied before it). The others (restart_dead_codes,
# measure_pattern, log_every, max_nonfinite) are about the tokenizer's training and logs, not the term.
OBJECTIVE_KEYS = ('weight', 'estimator', 'kernel', 'bandwidths', 'bandwidth', 'bandwidth_unit', 'scale',
                  'standardize', 'std_eps', 'std_correction', 'clamp', 'normalization', 'max_samples',
                  'num_features', 'gather', 'stream', 'pattern', 'delays', 'delay_crop', 'schedule',
                  'paper_every', 'warmup')


def resolve_delays(mmd_cfg: tp.Any, n_q: int) -> tp.List[int]:
    """Delays of the one-step tuple: explicit `mmd.delays`, else those of the named `mmd.pattern`.

    Args:
        mmd_cfg: the `mmd` config node.
        n_q (int): number of codebooks of the quantizer.
    Returns:
        One delay per codebook.
    """
    if mmd_cfg.delays is not None:
        delays = [int(d) for d in mmd_cfg.delays]
        if len(delays) != n_q:
            raise ValueError(f"mmd.delays={delays} has {len(delays)} entries but the quantizer has {n_q} codebooks "
                             f"(rvq.n_q={n_q}): give one delay per codebook, e.g. mmd.delays={list(range(n_q))}, "
                             "or set mmd.delays=null and pick mmd.pattern.")
        if min(delays) < 0:
            raise ValueError(f"mmd.delays={delays}: delays must be >= 0.")
        return delays
    if mmd_cfg.pattern not in PATTERN_DELAYS:
        raise ValueError(f"mmd.pattern={mmd_cfg.pattern!r} is not supported: use one of {sorted(PATTERN_DELAYS)} "
                         "(patterns that sample all codebooks in one step), or give mmd.delays explicitly.")
    return PATTERN_DELAYS[mmd_cfg.pattern](n_q)


def stage_stream(stream: str, stage_input: torch.Tensor, stage_output: torch.Tensor) -> torch.Tensor:
    """The vector that stands for one RVQ stage in the term.

    Args:
        stream (str): one of `STREAMS`: 'codeword', the chosen codeword q_k with its gradient straight through to
            the stage's input (the authors' ICML code); 'residual', the residual after the stage,
            r_k = input_k - sg(q_k) = emb - sum_{j<=k} sg(q_j) (the authors' final PR); 'input', the stage's
            input residual, emb - sum_{j<k} sg(q_j) (their first version).
        stage_input (torch.Tensor): the stage's input residual [B, D, T].
        stage_output (torch.Tensor): the stage's output as RVQ's training forward gives it (the codeword's value,
            straight-through to `stage_input`).
    Returns:
        [B, D, T]; its gradient reaches the encoder only (never the codebooks or the decoder).
    """
    if stream == 'codeword':
        return stage_output
    if stream == 'residual':
        return stage_input - stage_output.detach()
    if stream == 'input':
        return stage_input
    raise ValueError(f"mmd.stream={stream!r} is unknown: use one of {list(STREAMS)}.")


def quantize_streams(rvq: torch.nn.Module, emb: torch.Tensor,
                     stream: str = 'codeword') -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Residual-quantize `emb` like RVQ's training forward, without its side effects (no EMA update, no expiry).

    Args:
        rvq: AudioCraft's `ResidualVectorQuantization` (`model.quantizer.vq`).
        emb (torch.Tensor): encoder output [B, D, T].
        stream (str): which vector stands for each stage, see `stage_stream`.
    Returns:
        streams [B, K, D, T] and codes [B, K, T].
    """
    residual = emb
    streams, codes = [], []
    for layer in rvq.layers:
        indices = layer.encode(residual)
        quantized = layer.decode(indices)
        streams.append(stage_stream(stream, residual, residual + (quantized - residual).detach()))
        codes.append(indices)
        residual = residual - quantized.detach()
    return torch.stack(streams, dim=1), torch.stack(codes, dim=1)


def loss_options(mmd_cfg: tp.Any) -> tp.Dict[str, tp.Any]:
    """Keyword arguments of `independence_loss` from the `mmd` config node (delays and crop excluded).

    Args:
        mmd_cfg: the `mmd` config node.
    Returns:
        The options; with `mmd.bandwidth_unit=radius`, the bandwidths squared into variances.
    """
    bandwidths = None if mmd_cfg.bandwidths is None else [float(b) for b in mmd_cfg.bandwidths]
    if mmd_cfg.get('bandwidth_unit', 'variance') == 'radius':
        bandwidths = [b * b for b in (bandwidths if bandwidths is not None else KERNELS[mmd_cfg.kernel])]
    return dict(
        estimator=mmd_cfg.estimator, kernel=mmd_cfg.kernel, bandwidths=bandwidths, bandwidth=mmd_cfg.bandwidth,
        scale=float(mmd_cfg.scale), standardize=mmd_cfg.standardize, max_samples=mmd_cfg.max_samples,
        num_features=mmd_cfg.num_features, gather=mmd_cfg.gather, clamp=mmd_cfg.clamp,
        normalization=mmd_cfg.normalization, std_eps=float(mmd_cfg.std_eps),
        std_correction=int(mmd_cfg.std_correction))


def parse_loss_schedule(schedule: tp.Any, balanced: tp.Dict[str, float]) -> tp.Dict[str, tp.List[tp.Tuple[int, float]]]:
    """Checks `loss_schedule` ({loss: [[update, weight], ...]}) against the balancer's losses.

    Args:
        schedule: the config's `loss_schedule` (None or empty: no schedule).
        balanced: the balancer's weights, {loss: weight}; only these losses can be scheduled.
    Returns:
        {loss: [(update, weight), ...]} with the updates in increasing order.
    """
    parsed: tp.Dict[str, tp.List[tp.Tuple[int, float]]] = {}
    for name, steps in dict(schedule or {}).items():
        if name not in balanced:
            raise ValueError(f"loss_schedule.{name}: only the balanced losses can be scheduled, those with a weight "
                             f"> 0 in `losses`: {sorted(balanced)}. Give {name} a weight in `losses` first.")
        try:
            pairs = [(int(update), float(weight)) for update, weight in steps]
        except (TypeError, ValueError):
            raise ValueError(f"loss_schedule.{name}={steps!r} must be a list of [update, weight] pairs, e.g. "
                             "[[300,0.1]]") from None
        updates = [update for update, _ in pairs]
        if not pairs or updates[0] < 0 or any(b <= a for a, b in zip(updates, updates[1:])):
            raise ValueError(f"loss_schedule.{name}={steps!r}: the updates must be >= 0 and strictly increasing.")
        if any(weight < 0 for _, weight in pairs):
            raise ValueError(f"loss_schedule.{name}={steps!r}: the weights must be >= 0.")
        parsed[name] = pairs
    # AudioCraft's balancer divides by the sum of the weights: it must stay > 0 at every listed update.
    for update in sorted({0} | {start for pairs in parsed.values() for start, _ in pairs}):
        weights = {**balanced, **scheduled_loss_weights(parsed, balanced, update)}
        if sum(weights.values()) <= 0:
            raise ValueError(f"loss_schedule: from update {update} every balanced loss has weight 0 ({weights}); "
                             "AudioCraft's balancer needs a positive total. Keep one loss above 0 there.")
    return parsed


def scheduled_loss_weights(schedule: tp.Dict[str, tp.List[tp.Tuple[int, float]]], initial: tp.Any,
                           update: int) -> tp.Dict[str, float]:
    """The weight of each scheduled loss at `update` (0-based, whole run): its `initial` weight (`losses`) until
    its first listed update, then the weight of the last listed update reached."""
    weights = {}
    for name, pairs in schedule.items():
        weights[name] = float(initial[name])
        for start, weight in pairs:
            if update >= start:
                weights[name] = weight
    return weights


def _log_term(metrics: tp.Dict[str, tp.Any], value: torch.Tensor) -> None:
    """Log the term's value as `mmd` and whether it was finite as `mmd_nonfinite`; a non-finite value is left
    out of `mmd` (AudioCraft averages each metric over an epoch: one NaN would make the epoch's mean NaN)."""
    value = value.detach()
    finite = bool(torch.isfinite(value))  # a host sync: metrics become floats on the host in any case
    metrics['mmd_nonfinite'] = torch.tensor(float(not finite))
    if finite:
        metrics['mmd'] = value


def _grad_norm_of(backward: tp.Callable[[], tp.Any], params: tp.List[torch.nn.Parameter]) -> tp.Tuple[tp.Any, float]:
    """Run `backward` and measure the L2 norm of the gradient it adds to `params`, exactly.

    The gradients already there are set aside and added back after (float addition is commutative, so `.grad`
    ends bit-identical to plain accumulation); subtracting before from after instead would lose a small gradient
    next to a large one.

    Returns:
        What `backward` returned, and the norm.
    """
    stash = [param.grad for param in params]
    for param in params:
        param.grad = None
    try:
        out = backward()
    finally:
        total = 0.
        for old, param in zip(stash, params):
            if param.grad is not None:
                total += float(param.grad.detach().double().square().sum())
                if old is not None:
                    param.grad = param.grad + old
            else:
                param.grad = old
    return out, total ** 0.5


def _expire_codes_and_reset_stats(codebook: torch.nn.Module, batch_samples: torch.Tensor, grace: int = 0) -> None:
    """`EuclideanCodebook.expire_codes_` that also resets the EMA statistics of the codes it replaces.

    AudioCraft 1.3.0 writes the new codeword to `embed` and then, in the same forward, overwrites all of `embed`
    with `embed_avg / cluster_size`: a replaced code gets its stale value back and stays dead. Giving it the
    statistics of one fresh cluster at the new value makes the restart stick. With `grace` 0 that cluster counts
    `threshold_ema_dead_code` samples, which the same forward's EMA decays below the threshold: a code no frame
    picks at the next step is replaced again then. With `grace` g >= 1 it counts threshold / decay^g (plus a
    margin of a tenth of one step's decay, against rounding): unpicked, it keeps its value for exactly g more steps.
    The number of codes replaced is left in `codebook.restarted_codes` (a tensor, for the logs).

    Args:
        codebook (EuclideanCodebook): the codebook, bound as `self`.
        batch_samples (torch.Tensor): this forward's input vectors, the pool new codewords are drawn from.
        grace (int): training steps a restarted code survives unpicked.
    """
    threshold = codebook.threshold_ema_dead_code
    codebook.restarted_codes = torch.zeros((), device=codebook.cluster_size.device)
    if threshold == 0:
        return
    expired = codebook.cluster_size < threshold
    if not torch.any(expired):
        return
    samples = batch_samples.reshape(-1, batch_samples.shape[-1])
    codebook.replace_(samples, mask=expired)
    count = float(threshold)
    if grace > 0:
        count *= (1 + (1 - codebook.decay) / 10) / codebook.decay ** grace
    codebook.cluster_size.data[expired] = count
    codebook.embed_avg.data[expired] = codebook.embed.data[expired] * count
    codebook.restarted_codes = expired.sum().float()
    flashy.distrib.broadcast_tensors(codebook.buffers())


class NonFiniteTermError(FloatingPointError):
    """The independence term was not finite for `mmd.max_nonfinite` consecutive back-propagated steps."""


def _perplexity(counts: torch.Tensor) -> torch.Tensor:
    """Perplexity (2 ** entropy in bits, as exp of nats) of a histogram of code counts."""
    probs = counts.clamp(min=0) / counts.clamp(min=0).sum().clamp(min=1e-12)
    return torch.exp(-(probs * probs.clamp(min=1e-12).log()).sum())


class CompressionMMDSolver(DependenceStages, CompressionSolver):
    """AudioCraft's CompressionSolver plus the independence term and codebook-dependence metrics.

    Config: every option sits under `mmd:` (see `config/mmd/default.yaml` and docs/compression_mmd.md).
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        self.mmd_cfg = cfg.mmd
        self._check_mmd_config(cfg)
        # Persistent schedule state (checkpointed): training forwards seen, the step the warm-up (re)started at, and
        # whether / how often the usage guard paused the term.
        self.mmd_state: tp.Dict[str, tp.Any] = {'step': 0, 'usage_reached_at': None, 'paused': False, 'pauses': 0}
        self._last_usage: tp.Optional[float] = None  # usage measured by the gate this step (logged as mmd_usage)
        # The guard's measure, a bias-corrected running mean of `batch_usage` (not checkpointed: refills at once).
        self._average_batch_usage = flashy.averager(cfg.mmd.warmup.usage_decay)
        self._recent_batch_usage = 1.
        # Consecutive back-propagated terms that were not finite (all workers agree; not checkpointed), and the
        # position in the epoch of the training step, which decides the steps `mmd.log_every` measures.
        self._nonfinite_run = 0
        self._log_epoch: tp.Optional[int] = None
        self._log_index = 0
        self._nonfinite_workers = 0  # workers whose last back-propagated term was not finite
        # The gradient diagnostic of this step: encoder-side gradient norms of the weighted term ('term') and of
        # the balanced losses ('rec'), on the steps that measure it (None on the others).
        self._grad_probe: tp.Optional[tp.Dict[str, float]] = None
        super().__init__(cfg)
        self.register_stateful('mmd_state')
        self.loss_schedule = parse_loss_schedule(cfg.get('loss_schedule'), self.balancer.weights)
        self._balancer_backward = self.balancer.backward
        self.balancer.backward = self._measured_balancer_backward  # instance attribute: AudioCraft's class unchanged

    @staticmethod
    def _check_mmd_config(cfg: omegaconf.DictConfig) -> None:
        mmd = cfg.mmd
        if mmd.kernel not in KERNELS:
            raise ValueError(f"mmd.kernel={mmd.kernel!r} is unknown: use one of {sorted(KERNELS)}.")
        if mmd.estimator not in ESTIMATORS:
            raise ValueError(f"mmd.estimator={mmd.estimator!r} is unknown: use one of {list(ESTIMATORS)}.")
        if mmd.schedule not in SCHEDULES:
            raise ValueError(f"mmd.schedule={mmd.schedule!r} is unknown: use one of {list(SCHEDULES)}.")
        if mmd.weight < 0:
            raise ValueError(f"mmd.weight={mmd.weight} must be >= 0.")
        if mmd.measure_pattern is not None and mmd.measure_pattern not in PATTERN_DELAYS:
            raise ValueError(f"mmd.measure_pattern={mmd.measure_pattern!r} is unknown: use one of "
                             f"{sorted(PATTERN_DELAYS)}, or null to measure on the term's own delays.")
        if not 0 <= mmd.warmup.guard < 1:
            raise ValueError(f"mmd.warmup.guard={mmd.warmup.guard} is a usage (perplexity / bins) in [0, 1), "
                             "e.g. 0.1; 0 turns the guard off.")
        if int(mmd.log_every) < 1:
            raise ValueError(f"mmd.log_every={mmd.log_every} must be >= 1 (1 = measure the term on every step).")
        if int(mmd.max_nonfinite) < 0:
            raise ValueError(f"mmd.max_nonfinite={mmd.max_nonfinite} must be >= 0 (0 = never stop on "
                             "non-finite terms, only skip and log them).")
        if mmd.schedule == 'paper' and mmd.paper_every < 1:
            raise ValueError(f"mmd.paper_every={mmd.paper_every} must be >= 1.")
        for key, options in (('stream', STREAMS), ('normalization', NORMALIZATIONS), ('delay_crop', DELAY_CROPS),
                             ('bandwidth_unit', BANDWIDTH_UNITS)):
            if mmd[key] not in options:
                raise ValueError(f"mmd.{key}={mmd[key]!r} is unknown: use one of {list(options)}.")
        if mmd.bandwidth_unit == 'radius' and (mmd.kernel not in ('multiscale_gaussian', 'gaussian')
                                               or mmd.bandwidth != 'fixed'):
            raise ValueError(f"mmd.bandwidth_unit=radius reads fixed Gaussian bandwidths as radii (a = sigma^2); "
                             f"it has no meaning with mmd.kernel={mmd.kernel} mmd.bandwidth={mmd.bandwidth}: use "
                             "mmd.bandwidth_unit=variance, or mmd.kernel=multiscale_gaussian|gaussian with "
                             "mmd.bandwidth=fixed.")
        options = loss_options(mmd)
        try:
            check_options(**{k: v for k, v in options.items() if k not in ('bandwidths', 'standardize', 'clamp')})
        except ValueError as error:
            raise ValueError(f"Invalid mmd config (the option names are the mmd.* keys): {error}") from None
        if CompressionMMDSolver._uses_python_visqol(cfg):
            # fail at start, not after training, if visqol-python is missing
            PythonViSQOL(**dict_from_config(cfg.metrics.visqol))

    @staticmethod
    def _uses_python_visqol(cfg: omegaconf.DictConfig) -> bool:
        """ViSQOL is on but no bazel-built binary is given (AudioCraft's default `metrics.visqol.bin: null`)."""
        return bool(cfg.evaluate.metrics.get('visqol', False)) and cfg.metrics.visqol.get('bin') is None

    def build_model(self):
        super().build_model()
        rvq = self.model.quantizer.vq
        self.delays = resolve_delays(self.mmd_cfg, len(rvq.layers))
        # The codes' dependence is measured on the LM's tuples, whichever tuples the term makes independent.
        measure_pattern = self.mmd_cfg.measure_pattern
        self.measure_delays = self.delays if measure_pattern is None else resolve_delays(
            omegaconf.OmegaConf.create({'delays': None, 'pattern': measure_pattern}), len(rvq.layers))
        if self.mmd_cfg.delay_crop == 'num_codebooks' and max(self.delays) > len(rvq.layers):
            raise ValueError(f"mmd.delay_crop=num_codebooks drops {len(rvq.layers)} steps, fewer than "
                             f"max(delays)={max(self.delays)} (mmd.delays={self.delays}): use "
                             "mmd.delay_crop=max_delay.")
        self.loss_options = loss_options(self.mmd_cfg)
        self.mmd_rng = torch.Generator(device=self.device)
        self.mmd_rng.manual_seed(self.cfg.seed + flashy.distrib.rank())
        self.dependence = self._new_dependence()
        self._collect_codes = False
        self._in_evaluate = False
        # (input residual, output) of each RVQ stage of the current forward, for `stage_stream`.
        self._stages: tp.List[tp.Tuple[torch.Tensor, torch.Tensor]] = []
        self._paper_buffer: tp.Deque[torch.Tensor] = deque(maxlen=max(1, self.mmd_cfg.paper_every))
        # Decayed histogram of the codes training frames actually pick [K, bins]: the warm-up's usage measure.
        self._code_counts = torch.zeros(len(rvq.layers), rvq.layers[0].codebook_size, device=self.device)
        grace = self.mmd_cfg.restart_grace
        if not isinstance(grace, int) or grace < 0:
            raise ValueError(f"mmd.restart_grace={grace!r}: give the steps a restarted code survives unpicked, an "
                             "integer >= 0 (0: none, 1: one step)")
        for layer in rvq.layers:
            layer.register_forward_hook(self._on_stage)
            if self.mmd_cfg.restart_dead_codes:
                # Instance attribute: the class, the buffers and the saved format stay AudioCraft's.
                layer._codebook.expire_codes_ = types.MethodType(
                    functools.partial(_expire_codes_and_reset_stats, grace=grace), layer._codebook)
        if self.mmd_cfg.restart_dead_codes:
            self._check_restart_threshold()
        self.model.quantizer.register_forward_pre_hook(self._before_quantizer)
        self.model.quantizer.register_forward_hook(self._after_quantizer)
        self.model.register_forward_pre_hook(self._before_model)

    def _check_restart_threshold(self) -> None:
        """A working restart needs a dead-code threshold below the EMA count a code gets under uniform use.

        A code's EMA `cluster_size` tends to its picks per step, on average frames per step (per worker) / bins;
        with the threshold at or above that, most codes count as dead at every step and the codebook churns
        (AudioCraft's default of 2 is harmless only because its own restart is undone).
        """
        if self.cfg.dataset.segment_duration is None:  # whole files: no fixed number of frames per step
            return
        rvq = self.model.quantizer.vq
        threshold = float(rvq.layers[0]._codebook.threshold_ema_dead_code)
        frames = self.cfg.dataset.batch_size * int(self.cfg.dataset.segment_duration * self.model.frame_rate)
        bins = rvq.layers[0].codebook_size
        uniform_count = frames / bins
        if threshold >= uniform_count:
            raise ValueError(
                f"mmd.restart_dead_codes=true with rvq.threshold_ema_dead_code={threshold:g}: a code picked at the "
                f"uniform rate gets an EMA count of {uniform_count:.3g} per step ({frames} frames per step and worker "
                f"/ {bins} bins), below the threshold, so most codes would be restarted at every step. Lower it, "
                f"e.g. rvq.threshold_ema_dead_code={uniform_count / 10:.2g} (a tenth of that count), or set "
                "mmd.restart_dead_codes=false.")

    # --- hooks -------------------------------------------------------------------------------------------------
    def _paper_schedule(self) -> bool:
        """The buffered schedule is on: `mmd.schedule=paper` with a weight. At weight 0 there is nothing to
        back-propagate, so the term is measured as in the per-step schedule (the logged steps' own batches), and a
        weight-0 step costs AudioCraft's: no buffer, no re-encoding."""
        return self.mmd_cfg.schedule == 'paper' and self.mmd_cfg.weight > 0

    def _before_model(self, module, inputs):
        if self.model.training and self._paper_schedule():
            self._paper_buffer.append(inputs[0].detach())

    def _before_quantizer(self, module, inputs):
        self._stages = []

    def _on_stage(self, module, inputs, output):
        self._stages.append((inputs[0], output[0]))

    def _after_quantizer(self, module, inputs, qres: QuantizedResult) -> QuantizedResult:
        if not self.model.training:
            # Valid: the term on every batch, never back-propagated.
            if self._collect_codes:
                self.dependence.update(qres.codes)
            streams = self._take_streams()
            if self._in_evaluate:
                # AudioCraft's evaluate stage keeps the reconstruction and drops these metrics, and the term over a
                # whole track costs O(frames^2): 65% of the stage on the real preset's 5-min tracks, for nothing.
                return qres
            metrics = dict(qres.metrics)
            _log_term(metrics, self._term(streams, with_grad=False))
            return dataclasses.replace(qres, metrics=metrics)
        return self._train_quantizer(qres)

    def _train_quantizer(self, qres: QuantizedResult) -> QuantizedResult:
        cfg = self.mmd_cfg
        state = self.mmd_state
        state['step'] += 1
        periodic = self._periodic_step()
        # The usage histograms, only while the warm-up gate or the guard reads them (or for the logged ppl_q{k}).
        batch_counts = None
        if cfg.weight > 0 and cfg.warmup.min_usage > 0 and state['usage_reached_at'] is None:
            batch_counts = self._batch_code_counts(qres.codes)
            self._code_counts[:len(batch_counts)] += batch_counts
        guarded = cfg.weight > 0 and cfg.warmup.guard > 0
        if guarded:
            if batch_counts is None:
                batch_counts = self._batch_code_counts(qres.codes, decay=False)
            self._recent_batch_usage = self._average_batch_usage({'usage': self.batch_usage(batch_counts)})['usage']
        weight = self.current_weight()
        logged = weight > 0 or periodic  # the steps that log the term and ppl_q{k}
        # The term: with its gradient when it is back-propagated, else only on the logged steps (no gradient).
        streams: tp.Optional[torch.Tensor] = None
        paper = self._paper_schedule()
        if paper:
            streams = self._paper_streams(weight)  # every paper_every steps
        elif logged:
            streams = self._take_streams()
        self._stages = []
        value = None if streams is None else self._term(streams, with_grad=weight > 0)

        metrics = dict(qres.metrics)
        metrics['mmd_weight'] = torch.tensor(weight)
        if value is not None:
            if weight > 0:
                # Decided on every worker from the same flag: they skip (or keep) the same terms, or their
                # gradients and metrics would no longer match.
                nonfinite = self._nonfinite_everywhere(value, streams)
                if nonfinite:
                    self._on_nonfinite_term(value, weight)
                else:
                    self._nonfinite_run = 0
                    if value.requires_grad:
                        # The paper schedule's macro batch has a graph of its own; the per-step streams share the
                        # step's encoder graph, which AudioCraft's backward passes still need.
                        self._backward_term(value * weight, retain_graph=not paper,
                                            measure=paper or periodic)
            _log_term(metrics, value)
            if weight > 0:
                metrics['mmd_nonfinite'] = torch.tensor(float(nonfinite))  # on any worker: the skip decision
        elif paper:
            # The paper schedule logs its term on every step, 0 between its cycle steps (unchanged meaning).
            metrics['mmd'] = torch.zeros((), device=self.device)
        if self._last_usage is not None:
            metrics['mmd_usage'] = torch.tensor(self._last_usage)
            self._last_usage = None
        if guarded:
            metrics['mmd_batch_usage'] = torch.tensor(self._recent_batch_usage)
        if logged:
            # Perplexity of the codes of this batch, per active codebook. (Not the EMA cluster sizes: a restarted
            # dead code gets a fresh count, so those look in use even when no frame picks them.)
            if batch_counts is None:
                batch_counts = self._batch_code_counts(qres.codes, decay=False)
            for k, counts in enumerate(batch_counts):
                metrics[f"ppl_q{k + 1}"] = _perplexity(counts)
        if cfg.restart_dead_codes:  # codes restarted at this step, all codebooks: the churn, per update
            metrics['codes_restarted'] = sum(getattr(layer._codebook, 'restarted_codes', torch.zeros(()))
                                             for layer in self.model.quantizer.vq.layers)
        return dataclasses.replace(qres, metrics=metrics)

    # --- the gradient diagnostic -----------------------------------------------------------------------------------
    def _backward_term(self, loss: torch.Tensor, retain_graph: bool, measure: bool) -> None:
        """Back-propagate the weighted term now; on measured steps, record its encoder gradient norm."""
        if not measure:
            loss.backward(retain_graph=retain_graph)
            return
        _, norm = _grad_norm_of(lambda: loss.backward(retain_graph=retain_graph), list(self.model.encoder.parameters()))
        self._grad_probe = {'term': norm}

    def _measured_balancer_backward(self, losses, input):
        """AudioCraft's `balancer.backward`; on measured steps, records the encoder gradient norm it adds."""
        if self._grad_probe is None:
            return self._balancer_backward(losses, input)
        out, self._grad_probe['rec'] = _grad_norm_of(lambda: self._balancer_backward(losses, input),
                                                     list(self.model.encoder.parameters()))
        return out

    def run_step(self, idx: int, batch: torch.Tensor, metrics: dict) -> dict:
        """AudioCraft's step, plus the gradient diagnostic on the steps that measure it: the encoder-side gradient
        norms of the weighted term (`mmd_grad_norm`) and of the balanced reconstruction losses (`rec_grad_norm`),
        and their ratio `mmd_grad_ratio` (local to each worker, before gradient averaging and clipping)."""
        self._grad_probe = None
        if self.is_training and self.loss_schedule:
            update = (self.epoch - 1) * self.train_updates_per_epoch + idx
            for name, weight in scheduled_loss_weights(self.loss_schedule, self.cfg.losses, update).items():
                self.balancer.weights[name] = weight
                metrics[f'loss_weight_{name}'] = weight
        metrics = super().run_step(idx, batch, metrics)
        probe, self._grad_probe = self._grad_probe, None
        if probe is not None and 'rec' in probe:
            metrics['mmd_grad_norm'] = probe['term']
            metrics['rec_grad_norm'] = probe['rec']
            metrics['mmd_grad_ratio'] = probe['term'] / max(probe['rec'], 1e-30)
        return metrics

    def _periodic_step(self) -> bool:
        """Whether this training step is one of the `mmd.log_every` measured ones: the first step of each epoch,
        then every `log_every`-th (counted within the epoch, so that every epoch logs the term; the same steps on
        every worker)."""
        epoch = self.epoch
        if epoch != self._log_epoch:
            self._log_epoch, self._log_index = epoch, 0
        due = self._log_index % int(self.mmd_cfg.log_every) == 0
        self._log_index += 1
        return due

    def _take_streams(self) -> torch.Tensor:
        """The `mmd.stream` vectors of the stages of the last forward [B, K_active, D, T]."""
        streams = torch.stack([stage_stream(self.mmd_cfg.stream, stage_input, stage_output)
                               for stage_input, stage_output in self._stages], dim=1)
        self._stages = []
        return streams

    # --- non-finite terms ----------------------------------------------------------------------------------------
    def _nonfinite_everywhere(self, value: torch.Tensor, streams: torch.Tensor) -> bool:
        """Whether the term or its input is not finite on any worker (one host sync; one all-reduce of a flag
        with several workers). The input is checked too: a non-finite sample that a kernel maps to a finite value
        would still send a non-finite gradient."""
        flag = torch.logical_not(torch.isfinite(value.detach()) & torch.isfinite(streams.detach()).all()).float()
        if flashy.distrib.world_size() > 1:
            flag = flag.reshape(1)
            flashy.distrib.all_reduce(flag)
        self._nonfinite_workers = int(flag.item())
        return self._nonfinite_workers > 0

    def _on_nonfinite_term(self, value: torch.Tensor, weight: float) -> None:
        """Skip a non-finite term (not back-propagated) and stop after `mmd.max_nonfinite` in a row."""
        self._nonfinite_run += 1
        limit = int(self.mmd_cfg.max_nonfinite)
        if limit <= 0 or self._nonfinite_run < limit:
            return
        world = flashy.distrib.world_size()
        where = f"non-finite on {self._nonfinite_workers} of {world} workers; " if world > 1 else ""
        raise NonFiniteTermError(
            f"The independence term was not finite for {self._nonfinite_run} consecutive training steps "
            f"(mmd.max_nonfinite={limit}), the last at step {self.mmd_state['step']} (epoch {self.epoch}): "
            f"value {float(value.detach()):g} on this worker ({where}weight {weight:g}). Each of them was skipped "
            "(not back-propagated; logged as mmd_nonfinite). Likely causes: a diverging encoder (look at l1/msspec "
            "and ratio1 in the logs; lower optim.lr, set optim.max_norm, or lower mmd.weight); fp16/bf16 overflow "
            "in the encoder or quantizer (run in float32, e.g. autocast off); a degenerate bandwidth or "
            "standardization on a collapsed codebook (ppl_q{k} near 1: try mmd.bandwidth=median or fixed, "
            "mmd.standardize=false, mmd.warmup.guard=0.1, mmd.restart_dead_codes=true). To keep training and only "
            "skip such terms, set mmd.max_nonfinite=0 (never stop) or a larger limit.")

    # --- the term ------------------------------------------------------------------------------------------------
    def _term(self, streams: torch.Tensor, with_grad: bool) -> torch.Tensor:
        """Independence value of the active codebooks of `streams` [B, K, D, T] (0 with fewer than 2)."""
        num_active = streams.shape[1]
        delays = self.delays[:num_active]
        crop = num_active if self.mmd_cfg.delay_crop == 'num_codebooks' and any(delays) else None
        if num_active < 2 or streams.shape[-1] <= max(delays + [crop or 0]):
            return torch.zeros((), device=streams.device)
        options = self.loss_options
        if not self.model.training:
            # Gather in training only: valid shards of different lengths would leave a worker waiting forever in
            # the all_gather of a batch the others do not have (and valid only logs the term).
            options = dict(options, gather=False)
        with torch.set_grad_enabled(with_grad):
            return independence_loss(streams if with_grad else streams.detach(), delays=delays, crop=crop,
                                     generator=self.mmd_rng, **options)

    def _paper_streams(self, weight: float) -> tp.Optional[torch.Tensor]:
        """The published schedule: every `paper_every` updates, re-encode the buffered batches with the current
        encoder, for one term over all of them (the buffer restarts empty after each such step and on resume).
        None on the other steps.
        """
        if self.mmd_state['step'] % self.mmd_cfg.paper_every != 0 or not self._paper_buffer:
            return None
        batches = list(self._paper_buffer)
        self._paper_buffer.clear()
        with torch.set_grad_enabled(weight > 0):
            embs = []
            for audio in batches:
                x, _ = self.model.preprocess(audio)
                # As the authors' code: one checkpointed encoder pass per stored batch, so that the macro batch's
                # activations are recomputed in the backward instead of held (32 batches at the paper's scale).
                embs.append(torch.utils.checkpoint.checkpoint(self.model.encoder, x, use_reentrant=False)
                            if weight > 0 else self.model.encoder(x))
            streams, _ = quantize_streams(self.model.quantizer.vq, torch.cat(embs, dim=0), self.mmd_cfg.stream)
        return streams

    def _batch_code_counts(self, codes: torch.Tensor, decay: bool = True) -> torch.Tensor:
        """Histograms [K_active, bins] of the codes [B, K_active, T] of a training batch; with `decay`, decays the
        usage histogram by `mmd.warmup.usage_decay` (dropped-out codebooks get no count this step)."""
        bins = self._code_counts.shape[1]
        if decay:
            self._code_counts.mul_(self.mmd_cfg.warmup.usage_decay)
        return torch.stack([torch.bincount(codes[:, k].flatten(), minlength=bins) for k in range(codes.shape[1])]
                           ).to(self._code_counts)

    def codebook_usage(self) -> float:
        """Perplexity / bins of the least-used codebook, over the codes training frames picked recently (decayed
        histogram, `mmd.warmup.usage_decay` per update) summed over workers."""
        counts = self._code_counts.clone()
        flashy.distrib.all_reduce(counts)
        bins = counts.shape[1]
        return min(_perplexity(row).item() for row in counts) / bins

    def batch_usage(self, batch_counts: torch.Tensor) -> float:
        """Perplexity / bins of the least-used codebook within one training batch (summed over workers), from the
        histograms `batch_counts` [K_active, bins]: the usage guard's measure."""
        counts = batch_counts.clone()
        flashy.distrib.all_reduce(counts)
        return min(_perplexity(row).item() for row in counts) / counts.shape[1]

    def current_weight(self) -> float:
        """Weight of the term now: 0 until every codebook is in use, then a linear ramp to `mmd.weight`.

        The warm-up is tied to codebook usage, not a step count: a strong term switched on before the codebooks
        are used can keep them from ever being used. Usage is measured on the codes the frames actually pick
        (`codebook_usage`), not on the EMA cluster sizes, which count a restarted dead code as used whether or
        not any frame picks it. All workers see the same summed histogram, so they switch on at the same step.

        With `mmd.warmup.guard` > 0, the term also pauses while the least-used codebook's usage within a batch
        (`batch_usage`, averaged over recent batches) is below the guard, and the ramp restarts once it is back
        above. Within a batch, because a collapsing codebook can give each clip its own constant code: its
        histogram over many batches then still reads as well used.
        """
        cfg = self.mmd_cfg
        if cfg.weight == 0:
            return 0.
        state = self.mmd_state
        if state['usage_reached_at'] is None:
            if cfg.warmup.min_usage > 0:
                self._last_usage = self.codebook_usage()
                if self._last_usage < cfg.warmup.min_usage:
                    return 0.
            state['usage_reached_at'] = state['step']
        if cfg.warmup.guard > 0:
            if self._recent_batch_usage < cfg.warmup.guard:
                if not state.get('paused', False):
                    state['paused'] = True
                    state['pauses'] = state.get('pauses', 0) + 1
                return 0.
            if state.get('paused', False):
                state['paused'] = False
                state['usage_reached_at'] = state['step']
        if cfg.warmup.steps <= 0:
            return float(cfg.weight)
        progress = (state['step'] - state['usage_reached_at']) / cfg.warmup.steps
        return float(cfg.weight) * min(1., max(0., progress))

    def _new_dependence(self) -> CodebookDependence:
        rvq = self.model.quantizer.vq
        return CodebookDependence(cardinality=rvq.layers[0].codebook_size, num_codebooks=len(rvq.layers),
                                  delays=self.measure_delays)

    # --- stages ---------------------------------------------------------------------------------------------------
    def valid(self):
        return self._with_dependence(super().valid)

    def evaluate(self):
        self._in_evaluate = True
        try:
            return self._evaluate_stage()
        finally:
            self._in_evaluate = False

    def _evaluate_stage(self):
        if not self._uses_python_visqol(self.cfg):
            return self._with_dependence(super().evaluate)
        # AudioCraft's ViSQOL runs a bazel-built binary; without one, score each evaluate forward with visqol-python
        # here and keep AudioCraft's own (per-batch, binary-based) ViSQOL off for the stage.
        visqol = PythonViSQOL(**dict_from_config(self.cfg.metrics.visqol))
        scores: tp.List[float] = []

        def score(module, inputs, qres):
            if not module.training:
                # Reference first: the input audio (AudioCraft passes the reconstruction first, which makes a silent
                # reconstruction score high; ViSQOL is not symmetric).
                scores.append(visqol(inputs[0].detach().cpu(), qres.x.detach().cpu(), self.cfg.sample_rate))

        handle = self.model.register_forward_hook(score)
        self.cfg.evaluate.metrics.visqol = False
        try:
            metrics = self._with_dependence(super().evaluate)
        finally:
            self.cfg.evaluate.metrics.visqol = True
            handle.remove()
        mean = sum(scores) / len(scores) if scores else 0.
        metrics.update(flashy.distrib.average_metrics({'visqol': mean}, len(scores)))
        return metrics
