"""MusicGen training on the tokens of a `compression_mmd` tokenizer, with the measurements the paper's claim needs.

Everything is AudioCraft's `MusicGenSolver` (datasets with .json sidecars, conditioners, CFG dropout, EMA,
DDP/FSDP, valid/evaluate/generate stages, checkpoints and resume). This solver adds:
- tokenizer references AudioCraft does not resolve: an export folder (`python -m audiocraft_mmd.export`), a bare
  XP signature of this package, or an XP folder, next to AudioCraft's `//sig/SIG`, `//pretrained/NAME` and paths
  (resolved by `audiocraft_mmd.xps.resolve_tokenizer`);
- checks at start, with messages naming both sides: tokenizer vs LM (sample rate, channels, cardinality, codebook
  count, the codebook pattern), evaluators and conditioners whose weights are missing offline, and a resumed
  checkpoint trained on another tokenizer (frame rate, weights);
- `nll_bits_per_frame`: the sum over the K codebooks of the per-codebook cross-entropy, in bits. It is the same
  quantity for every codebook pattern (each pattern predicts every token once), so patterns compare;
- on valid/evaluate, the dependence (`codes_*`, `CodebookDependence`) of the tokens the LM models, on the tuple
  its pattern samples in one step (the tuple whose factorization the LM's speed rests on).
The training step does no extra work beyond one scalar product (the dependence is counted on valid/evaluate only).
"""
import math
from pathlib import Path
import typing as tp

import omegaconf
import torch

from audiocraft.models import builders as model_builders
from audiocraft.solvers.compression import CompressionSolver
from audiocraft.solvers.musicgen import MusicGenSolver

from ..xps import resolve_tokenizer, state_hash
from .compression_mmd import PATTERN_DELAYS
from .dependence import DependenceStages


def pattern_step_delays(pattern_provider: tp.Any, num_codebooks: int) -> tp.List[int]:
    """Codebooks and delays of the tuple a codebook pattern samples in one step, from AudioCraft's own layout.

    Args:
        pattern_provider: an AudioCraft `CodebooksPatternProvider`.
        num_codebooks (int): K.
    Returns:
        One delay per codebook, (q_1[t - d_1], ..., q_K[t - d_K]) being sampled in one step, when a step of the
        pattern holds all K codebooks (delay, parallel); an empty list otherwise (unroll, coarse_first, musiclm
        sample fewer codebooks per step: their one-step tuple has no factorization to measure).
    """
    layout = pattern_provider.get_pattern(4 * (num_codebooks + 4)).layout
    widest = max(layout, key=len)
    if len({coord.q for coord in widest}) < num_codebooks:
        return []
    latest = max(coord.t for coord in widest)
    by_codebook = {coord.q: latest - coord.t for coord in widest}
    return [by_codebook[q] for q in range(num_codebooks)]


def tokenizer_info(compression_model: tp.Any) -> tp.Dict[str, tp.Any]:
    """What an LM trained on a tokenizer depends on: rates, shape of the codes, and the weights' hash."""
    return {'sample_rate': int(compression_model.sample_rate), 'frame_rate': float(compression_model.frame_rate),
            'channels': int(compression_model.channels), 'cardinality': int(compression_model.cardinality),
            'num_codebooks': int(compression_model.num_codebooks), 'hash': state_hash(compression_model)}


def check_tokenizer_matches_lm(cfg: omegaconf.DictConfig, tokenizer: tp.Any, reference: str) -> None:
    """Raise ValueError naming both sides when the LM config cannot model the tokenizer's codes.

    Args:
        cfg: the XP config.
        tokenizer: the (wrapped) compression model.
        reference (str): how the user named the tokenizer (for the message).
    """
    side = f"the tokenizer ({reference})"
    problems = []
    if tokenizer.sample_rate != cfg.sample_rate:
        problems.append(f"{side} runs at {tokenizer.sample_rate} Hz but sample_rate={cfg.sample_rate}: set "
                        f"sample_rate={tokenizer.sample_rate}")
    if tokenizer.channels != cfg.channels:
        problems.append(f"{side} has {tokenizer.channels} channel(s) but channels={cfg.channels}: set "
                        f"channels={tokenizer.channels}")
    if tokenizer.cardinality != cfg.transformer_lm.card:
        problems.append(f"{side} has {tokenizer.cardinality} codes per codebook but the LM predicts "
                        f"transformer_lm.card={cfg.transformer_lm.card}: set transformer_lm.card="
                        f"{tokenizer.cardinality}")
    if tokenizer.num_codebooks != cfg.transformer_lm.n_q:
        problems.append(f"{side} gives {tokenizer.num_codebooks} codebooks but the LM predicts "
                        f"transformer_lm.n_q={cfg.transformer_lm.n_q}: set transformer_lm.n_q="
                        f"{tokenizer.num_codebooks} (or compression_model_n_q to use fewer of the tokenizer's)")
    if problems:
        raise ValueError("The LM does not match its tokenizer:\n  " + "\n  ".join(problems))
    check_pattern(cfg, tokenizer.num_codebooks)


def check_pattern(cfg: omegaconf.DictConfig, num_codebooks: int) -> tp.Any:
    """Build the LM's codebook pattern provider for `num_codebooks`, or raise naming the keys to change.

    Returns:
        The pattern provider.
    """
    pattern = cfg.codebooks_pattern
    name = pattern.modeling
    per_codebook = {'delay': ['delays'], 'unroll': ['flattening', 'delays']}.get(name, [])
    for key in per_codebook:
        values = pattern.get(name, {}).get(key)
        if values is not None and len(values) != num_codebooks:
            raise ValueError(
                f"codebooks_pattern.{name}.{key}={list(values)} has {len(values)} entries but the tokenizer gives "
                f"{num_codebooks} codebooks: give one per codebook, e.g. codebooks_pattern.{name}.{key}="
                f"{list(range(num_codebooks)) if key != 'delays' or name == 'delay' else [0] * num_codebooks}.")
    try:
        return model_builders.get_codebooks_pattern_provider(num_codebooks, pattern)
    except KeyError:
        raise ValueError(f"codebooks_pattern.modeling={name!r} is unknown: use one of parallel, delay, unroll, "
                         "coarse_first, musiclm.") from None
    except AssertionError as exc:
        raise ValueError(f"codebooks_pattern.modeling={name} cannot model {num_codebooks} codebooks with "
                         f"codebooks_pattern.{name}={omegaconf.OmegaConf.to_container(pattern.get(name, {}))}: "
                         f"{exc}") from None


def missing_offline_weights(cfg: omegaconf.DictConfig) -> tp.List[str]:
    """What the configured evaluators and conditioners need that is not on this machine, one line each with the
    way to turn it off. Checked at start: a missing file must not surface after days of training.

    Args:
        cfg: the XP config.
    Returns:
        Problems found (empty if none).
    """
    import importlib.util
    import os
    from audiocraft.environment import AudioCraftEnvironment
    problems = []
    metrics = cfg.evaluate.metrics

    def reference_missing(path: str) -> bool:
        try:
            return not AudioCraftEnvironment.resolve_reference_path(path).exists()
        except AssertionError:  # the //reference folder itself is missing
            return True

    if metrics.get('fad', False):
        tf = cfg.metrics.fad.tf
        missing = [what for what, ok in [
            (f"metrics.fad.tf.bin={tf.bin} (Google's frechet_audio_distance code)", tf.bin and Path(tf.bin).exists()),
            (f"metrics.fad.tf.model_path={tf.model_path} (VGGish checkpoint)", not reference_missing(tf.model_path)),
            ("TF_PYTHON_EXE (a Python with TensorFlow)", os.environ.get('TF_PYTHON_EXE'))] if not ok]
        if missing:
            problems.append("FAD (evaluate.metrics.fad) needs " + ", ".join(missing) +
                            "; see audiocraft/metrics/fad.py. Turn it off: evaluate.metrics.fad=false")
    if metrics.get('kld', False) and importlib.util.find_spec('hear21passt') is None:
        problems.append("KLD (evaluate.metrics.kld) needs the PaSST classifier: `pip install hear21passt` and its "
                        "weights in torch's hub cache (fetched on first use). Turn it off: evaluate.metrics.kld=false")
    if metrics.get('text_consistency', False):
        clap = cfg.metrics.text_consistency.clap
        missing = []
        if importlib.util.find_spec('laion_clap') is None:
            missing.append("the laion_clap package")
        if reference_missing(clap.model_path):
            missing.append(f"metrics.text_consistency.clap.model_path={clap.model_path}")
        if not _in_hf_cache('roberta-base', 'vocab.json'):
            missing.append("the roberta-base tokenizer in the Hugging Face cache")
        if missing:
            problems.append("CLAP score (evaluate.metrics.text_consistency) needs " + ", ".join(missing) +
                            ". Turn it off: evaluate.metrics.text_consistency=false")
    conditioners = cfg.get('conditioners') or {}
    for name, cond in conditioners.items():
        if not isinstance(cond, omegaconf.DictConfig) or cond.get('model') != 't5':
            continue
        t5_name = cond.t5.name
        if not _in_hf_cache(t5_name, 'config.json'):
            problems.append(
                f"conditioners.{name} uses T5 ({t5_name}), whose weights are not in the Hugging Face cache. "
                f"Without downloads, condition on a lookup table instead: conditioners.{name}.model=lut "
                f"(see config/solver/musicgen/musicgen_mmd_small.yaml), or fetch {t5_name} where you can and "
                "copy the cache (HF_HOME) here")
    return problems


def plateaued(history: tp.List[dict], patience: int, min_delta: float, key: str = 'nll_bits_per_frame') -> bool:
    """True when the valid `key` has not improved by `min_delta` for the last `patience` epochs (0: never).

    Args:
        history: the solver's history (one dict of stage metrics per epoch).
    """
    values = [epoch['valid'][key] for epoch in history if key in epoch.get('valid', {})]
    if patience <= 0 or len(values) <= patience:
        return False
    best_before = min(values[:-patience])
    return min(values[-patience:]) > best_before - min_delta


def valid_token_counts(batch: tp.Any, padding_mask: torch.Tensor, frame_rate: float) -> tp.List[int]:
    """Frames of each item's tokens that come from real audio, not from the zeros a short segment is padded with.

    AudioCraft's dataset keeps segments down to `min_segment_ratio` of their length and pads them with zeros; with
    `tokens.padding_with_special_token: false` (its default) the padding mask says nothing of it. This counts the
    real frames as AudioCraft does when it sets the special token: floor(n_frames / sample_rate * frame_rate).

    Args:
        batch: the batch the solver was given ((audio, infos) with AudioCraft's infos, or something else).
        padding_mask (torch.Tensor): AudioCraft's mask [B, K, T] of valid positions.
        frame_rate (float): the tokenizer's frame rate.
    Returns:
        One count per item, at most T.
    """
    num_frames = padding_mask.shape[-1]
    counts = padding_mask.all(dim=1).sum(dim=-1).tolist()
    infos = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
    if isinstance(infos, (tuple, list)) and len(infos) == len(counts):
        for i, info in enumerate(infos):
            if hasattr(info, 'n_frames') and hasattr(info, 'sample_rate'):
                real = math.floor(float(info.n_frames) / info.sample_rate * frame_rate)
                counts[i] = min(counts[i], real, num_frames)
    return [int(c) for c in counts]


def unpadded_items(codes: torch.Tensor, counts: tp.List[int]) -> tp.Iterator[torch.Tensor]:
    """The codes [B, K, T] without padded frames: the full-length items together, each shorter one on its own.

    Args:
        codes (torch.Tensor): codes [B, K, T].
        counts (list of int): real frames of each item (`valid_token_counts`).
    Yields:
        Code tensors [B', K, T'] holding real frames only.
    """
    num_frames = codes.shape[-1]
    full = [i for i, count in enumerate(counts) if count >= num_frames]
    if full:
        yield codes if len(full) == len(counts) else codes[full]
    for i, count in enumerate(counts):
        if 0 < count < num_frames:
            yield codes[i:i + 1, :, :count]


def common_frames_nll_bits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NLL in bits per frame, summed over the K codebooks, on the frames every codebook pattern scores.

    With `keep_only_valid_steps` (AudioCraft's default) a delay LM scores T - k frames of codebook k (the last k
    have no step), while parallel and unroll LMs score all T; a clip's last frames are not as hard as the others,
    so AudioCraft's per-codebook means are over different frames for different patterns (about 6% of q4's frames
    at 1 s, 1.5% at 4 s). Here every codebook is scored on frames [0, T - (K - 1)), valid in every pattern whose
    delays are at most K - 1, and within AudioCraft's own mask (padding).

    Args:
        logits (torch.Tensor): [B, K, T, card], in the codes' time frame.
        targets (torch.Tensor): [B, K, T].
        mask (torch.Tensor): [B, K, T] valid positions.
    Returns:
        A scalar tensor (detached).
    """
    num_codebooks, num_frames = targets.shape[1], targets.shape[-1]
    common = mask.clone()
    common[..., max(0, num_frames - (num_codebooks - 1)):] = False
    total = torch.zeros((), device=targets.device)
    with torch.no_grad():
        for k in range(num_codebooks):
            keep = common[:, k]
            if keep.any():
                total += torch.nn.functional.cross_entropy(logits[:, k][keep].float(), targets[:, k][keep])
    return total / math.log(2)


def _in_hf_cache(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return isinstance(found, str)


class MusicGenMMDSolver(DependenceStages, MusicGenSolver):
    """AudioCraft's MusicGenSolver on any tokenizer, with start-up checks, NLL in bits per frame and the
    dependence of the modelled tokens on the pattern's one-step tuple. Config: `musicgen_mmd:`."""

    def __init__(self, cfg: omegaconf.DictConfig):
        measure = cfg.musicgen_mmd.measure_pattern
        if measure is not None and measure not in PATTERN_DELAYS:
            raise ValueError(f"musicgen_mmd.measure_pattern={measure!r} is unknown: use one of "
                             f"{sorted(PATTERN_DELAYS)}, or null for the LM's own pattern.")
        problems = missing_offline_weights(cfg)
        if problems:
            raise RuntimeError("Missing before training starts:\n  " + "\n  ".join(problems))
        self.tokenizer: tp.Dict[str, tp.Any] = {}
        self._common_nll_bits: tp.Optional[torch.Tensor] = None
        super().__init__(cfg)
        self.register_stateful('tokenizer')

    def build_model(self) -> None:
        reference = str(self.cfg.compression_model_checkpoint)
        self.cfg.compression_model_checkpoint = resolve_tokenizer(reference)
        # Loaded once here to check it against the LM before AudioCraft's bare asserts see it (AudioCraft loads
        # it again in build_model: a second read of a file, at start only).
        try:
            tokenizer = CompressionSolver.wrapped_model_from_checkpoint(
                self.cfg, self.cfg.compression_model_checkpoint, device='cpu')
        except Exception as exc:  # AudioCraft's loader fails with bare asserts / key errors on a wrong checkpoint
            raise RuntimeError(
                f"Could not load a tokenizer from compression_model_checkpoint={reference!r} "
                f"({self.cfg.compression_model_checkpoint}): {type(exc).__name__}: {exc}. It must be a compression "
                "XP (e.g. compression/encodec_mmd_small_v2) or its export, not an LM XP.") from exc
        check_tokenizer_matches_lm(self.cfg, tokenizer, reference)
        del tokenizer
        super().build_model()
        self.tokenizer.update(tokenizer_info(self.compression_model))
        self.tokenizer['reference'] = reference
        num_codebooks = self.compression_model.num_codebooks
        measure = self.cfg.musicgen_mmd.measure_pattern
        self.measure_delays = (PATTERN_DELAYS[measure](num_codebooks) if measure is not None else
                               pattern_step_delays(self.model.pattern_provider, num_codebooks) or
                               PATTERN_DELAYS['delay'](num_codebooks))

    def load_state_dict(self, state: dict) -> None:
        saved = state.get('tokenizer')
        if saved:
            current = {k: v for k, v in self.tokenizer.items() if k != 'reference'}
            differs = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
            if differs:
                lines = [f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in differs.items()]
                raise RuntimeError(
                    f"This LM checkpoint was trained on another tokenizer (then {saved.get('reference')!r}, now "
                    f"{self.tokenizer['reference']!r}):\n  " + "\n  ".join(lines) + "\nPoint "
                    "compression_model_checkpoint at the tokenizer it was trained on, or start a new XP (another "
                    "tokenizer reference on the command line gives another signature).")
            state = {**state, 'tokenizer': {**saved, 'reference': self.tokenizer['reference']}}
        super().load_state_dict(state)

    def _new_dependence(self):
        from ..metrics import CodebookDependence
        return CodebookDependence(cardinality=self.compression_model.cardinality,
                                  num_codebooks=self.compression_model.num_codebooks, delays=self.measure_delays)

    def _prepare_tokens_and_attributes(self, batch, check_synchronization_points: bool = False):
        condition_tensors, audio_tokens, padding_mask = super()._prepare_tokens_and_attributes(
            batch, check_synchronization_points)
        if self._collect_codes and not self.model.training:
            for codes in unpadded_items(audio_tokens, valid_token_counts(batch, padding_mask,
                                                                         self.compression_model.frame_rate)):
                self.dependence.update(codes)
        return condition_tensors, audio_tokens, padding_mask

    def _compute_cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
        ce, ce_per_codebook = super()._compute_cross_entropy(logits, targets, mask)
        if not self.model.training:
            self._common_nll_bits = common_frames_nll_bits(logits, targets, mask)
        return ce, ce_per_codebook

    def run_step(self, idx: int, batch, metrics: dict) -> dict:
        self._common_nll_bits = None
        metrics = super().run_step(idx, batch, metrics)
        # ce is the mean over the K codebooks of each codebook's mean NLL per frame (nats)
        metrics['nll_bits_per_frame'] = metrics['ce'] * (self.model.num_codebooks / math.log(2))
        if self._common_nll_bits is not None:
            metrics['nll_bits_per_frame_common'] = self._common_nll_bits
        return metrics

    def should_stop_training(self) -> bool:
        return super().should_stop_training() or plateaued(self.history, self.cfg.musicgen_mmd.early_stop.patience,
                                                           self.cfg.musicgen_mmd.early_stop.min_delta)

    def should_run_stage(self, stage_name: str) -> bool:
        """AudioCraft's rule (every N epochs and at the last epoch), plus: the epoch whose valid stage reaches the
        early-stopping plateau is the last one, so its evaluate and generate stages run (AudioCraft's loop returns
        before the next epoch, and would never reach its final stages)."""
        if super().should_run_stage(stage_name):
            return True
        if stage_name not in ('evaluate', 'generate') or 'valid' not in self._pending_metrics:
            return False
        early_stop = self.cfg.musicgen_mmd.early_stop
        return plateaued(self.history + [{'valid': self._pending_metrics['valid']}], early_stop.patience,
                         early_stop.min_delta)

    def get_formatter(self, stage_name: str):
        formatter = super().get_formatter(stage_name)
        formatter.formats['nll_bits_per_frame'] = '.3f'
        # the summary line shows the dependence in brief; history.json keeps every `codes_*` statistic
        formatter.exclude_keys = list(formatter.exclude_keys) + ['codes_*']
        formatter.include_keys = list(formatter.include_keys) + ['codes_tc', 'codes_tc_excess', 'codes_mi_mean',
                                                                 'codes_util_min']
        return formatter

    def valid(self):
        return self._with_dependence(super().valid)

    def evaluate(self):
        if not self.cfg.evaluate.metrics.base:
            return super().evaluate()
        return self._with_dependence(super().evaluate)
