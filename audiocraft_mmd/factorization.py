"""The factorization cost of a delay LM given its own context: `python -m audiocraft_mmd.factorization MODEL`.

A delay (or parallel) MusicGen predicts the K entries of the tuple it samples in one step, e.g.
(q_1[t], q_2[t-1], q_3[t-2], q_4[t-3]), from one context vector h (its transformer's output at that step), as a
product of per-codebook distributions. What that product throws away is the dependence WITHIN the tuple given h.
This tool freezes the LM, collects h and the tuples on the train and valid splits, and fits two small heads on
the same frozen h until their held-out NLL stops improving (early stopping on a tenth of the train contexts):

- independent heads p(q_k | h), one linear map per codebook (what the LM does), starting from the LM's own heads
  and refit (kept as they are if refitting does not help on held-out data);
- chained heads p(q_k | h, q_1..q_{k-1} of the same tuple): those maps, frozen, plus one learned table per earlier
  entry j < k, [card x card] (any pairwise dependence given h) or of rank R (`--rank`: fewer parameters, for a
  weak dependence that a full table, fitted on tens of thousands of tuples, overfits before it finds), zero at
  start, added to the logits.

Their NLL difference on tuples they were not fitted on, in bits per frame summed over the codebooks, is the
estimated cost of the factorization (0 if the tuple's entries are independent given h), with a 95% bootstrap
interval over time blocks; a cost whose interval holds 0 is read as "not detected, below X". By default the heads
are cross-fitted on valid segments the LM never trained on (one half of the pieces scores the other); `--fit train`
fits them on train segments (an LM leaves less dependence on what it memorised: that reads the cost low). Early
stopping and the bootstrap work on whole time blocks of a piece (one segment long): random segments of one piece
overlap, and a frame held out in one segment but fitted in another would reward memorising. It is an estimate
with this head class: a dependence the chained head cannot represent (three-way, or a pairwise one that changes
with h) is not counted. Known answers (tests/test_factorization.py): independent tuples give about 0, a copied
codebook its entropy, the interval covers a noisy copy's true cost, and a dependence through h only is not
detected.

    python -m audiocraft_mmd.factorization LM_EXPORT_FOLDER [--clips 256] [--out result.json]
    python -m audiocraft_mmd.factorization LM_SIG... | GRID [--small|--small_v1] [--epoch N] [--rank R] [--fit train]
        # writes <XP folder>/factorization[_epochN][_rankR][_fittrain].json
"""
import argparse
import copy
import json
import math
from pathlib import Path
import random
import sys
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

_LN2 = math.log(2.)


def pair_table(cardinality: int, rank: tp.Optional[int] = None) -> nn.Module:
    """Logits added to codebook k's given the symbol of an earlier entry j: a full [card x card] table, or of rank
    `rank` (an embedding of q_j times an output map: 2 x card x rank parameters, far fewer than card x card, so
    that a weak dependence can be fitted from tens of thousands of tuples without the table overfitting first).
    Zero at start either way (the output map is zero, the embedding random, so that the gradient is not)."""
    if rank is None:
        table = nn.Embedding(cardinality, cardinality)
        nn.init.zeros_(table.weight)
        return table
    output = nn.Linear(rank, cardinality, bias=False)
    nn.init.zeros_(output.weight)
    return nn.Sequential(nn.Embedding(cardinality, rank), output)


class TupleHeads(nn.Module):
    """Per-codebook heads on a context h [N, D]: independent (linear), or chained (plus a pairwise table per
    earlier entry of the tuple, full or of rank `rank`, zero-initialized so that training starts from the
    independent heads' form)."""

    def __init__(self, dim: int, num_codebooks: int, cardinality: int, chained: bool,
                 init: tp.Optional[tp.Sequence[nn.Linear]] = None, rank: tp.Optional[int] = None):
        super().__init__()
        self.chained = chained
        self.linears = nn.ModuleList(nn.Linear(dim, cardinality) for _ in range(num_codebooks))
        if init is not None:  # start from the LM's own per-codebook heads
            with torch.no_grad():
                for linear, source in zip(self.linears, init):
                    linear.weight.copy_(source.weight)
                    linear.bias.copy_(source.bias if source.bias is not None else torch.zeros_like(linear.bias))
        self.tables = nn.ModuleDict()
        if chained:
            for k in range(1, num_codebooks):
                for j in range(k):
                    self.tables[f'{k}_{j}'] = pair_table(cardinality, rank)

    def logits(self, h: torch.Tensor, tuples: torch.Tensor, k: int) -> torch.Tensor:
        """Logits [N, card] of codebook k given `h` [N, D] (and, chained, the tuple's earlier entries)."""
        logits = self.linears[k](h)
        if self.chained:
            for j in range(k):
                logits = logits + self.tables[f'{k}_{j}'](tuples[:, j])
        return logits

    def nll(self, h: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
        """Mean NLL per codebook in nats [K] of `tuples` [N, K] given `h` [N, D]."""
        return torch.stack([F.cross_entropy(self.logits(h, tuples, k), tuples[:, k]) for k in range(len(self.linears))])


def held_out_split(groups: torch.Tensor, generator: torch.Generator,
                   fraction: float = 0.1) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held out) with whole groups held out: about `fraction` of the rows, at least one group, and
    at least one group left to fit on. Neighbouring frames of a piece are nearly copies of each other, and random
    segments of one piece overlap: a split by row or by segment would put the same music on both sides, and early
    stopping would then reward memorising (`time_blocks` gives groups that do not).

    Args:
        groups (torch.Tensor): group id per row [N] (a time block of a piece, or a piece).
        generator (torch.Generator): seeds the choice of groups.
    Returns:
        Row indices to fit on, and row indices held out.
    """
    names, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise ValueError("the held-out split needs rows from at least 2 groups (time blocks): collect more clips")
    held = torch.zeros(len(names), dtype=torch.bool)
    total = 0
    for index in torch.randperm(len(names), generator=generator).tolist():
        if total >= fraction * len(groups) or held.sum() >= len(names) - 1:
            break
        held[index] = True
        total += int(counts[index])
    rows_held = held[inverse]
    return torch.nonzero(~rows_held).flatten(), torch.nonzero(rows_held).flatten()


def fit_heads(heads: TupleHeads, h: torch.Tensor, tuples: torch.Tensor, parameters: tp.Iterable[nn.Parameter],
              seed: int = 0, lr: float = 1e-3, batch_size: int = 512, max_epochs: int = 200,
              patience: int = 5, groups: tp.Optional[torch.Tensor] = None) -> tp.Tuple[int, float]:
    """Fit `parameters` of `heads` on (h, tuples), early stopping on a held-out tenth of them (NLL, patience in
    epochs); the heads end at their best held-out NLL, their start included (refitting heads that an LM fitted on
    far more tuples may only make them worse).

    Args:
        heads (TupleHeads): the heads, trained in place.
        h (torch.Tensor): contexts [N, D] (frozen, no gradient).
        tuples (torch.Tensor): integer tuples [N, K].
        parameters: the parameters to train.
        seed (int): seed of the split and the batch order.
        groups (torch.Tensor, optional): group of each tuple [N] (`time_blocks`): whole groups are held out
            (None: each tuple is its own group, for independent synthetic tuples).
    Returns:
        The number of epochs run, and the best held-out NLL (nats, summed over codebooks).
    """
    generator = torch.Generator().manual_seed(seed)
    fit_rows, stop_rows = held_out_split(torch.arange(len(h)) if groups is None else groups, generator)
    h_stop, t_stop = h[stop_rows], tuples[stop_rows]
    h_fit, t_fit = h[fit_rows], tuples[fit_rows]
    optimizer = torch.optim.Adam(list(parameters), lr=lr)
    with torch.no_grad():
        best = float(heads.nll(h_stop, t_stop).sum())
    best_state, since_best, epoch = copy.deepcopy(heads.state_dict()), 0, 0
    for epoch in range(1, max_epochs + 1):
        for batch in torch.randperm(len(h_fit), generator=generator).split(batch_size):
            loss = heads.nll(h_fit[batch], t_fit[batch]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            held_out = float(heads.nll(h_stop, t_stop).sum())
        if held_out < best - 1e-4:
            best, best_state, since_best = held_out, copy.deepcopy(heads.state_dict()), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    heads.load_state_dict(best_state)
    return epoch, best


def fit_pair(h_train: torch.Tensor, tuples_train: torch.Tensor, cardinality: int, seed: int = 0,
             init: tp.Optional[tp.Sequence[nn.Linear]] = None, linear_lr: float = 1e-3,
             table_lrs: tp.Sequence[float] = (1e-2, 1e-3), rank: tp.Optional[int] = None,
             groups: tp.Optional[torch.Tensor] = None) -> tp.Tuple[TupleHeads, TupleHeads, tp.Dict[str, tp.Any]]:
    """Fit the independent heads (from `init`, the LM's own heads, when given), then the chained heads' tables on
    top of them with the linear maps frozen: the chained heads differ from the independent ones only by what the
    tuple's earlier entries tell (through full pairwise tables, or tables of rank `rank`). The tables are fitted at
    each of `table_lrs` and the fit with the best held-out NLL (whole groups held out, see `fit_heads`) is kept.

    Returns:
        The independent heads, the chained heads, and the epochs each fit ran (and the table learning rate kept).
    """
    info: tp.Dict[str, tp.Any] = {}
    torch.manual_seed(seed)
    dim, num_codebooks = h_train.shape[1], tuples_train.shape[1]
    independent = TupleHeads(dim, num_codebooks, cardinality, chained=False, init=init)
    info['epochs_independent'], _ = fit_heads(independent, h_train, tuples_train, independent.parameters(),
                                              seed=seed, lr=linear_lr, groups=groups)
    # The tables' learning rate, picked on the held-out tenth of the train tuples (never on valid): a strong
    # dependence needs large logits (1e-2 gets there in the epochs allowed), a weak one is overshot in the first
    # epoch at 1e-2 and found at 1e-3 (an LM of the factorization_gap grid: 0.000 against 0.020 bits).
    best_held_out = math.inf
    for table_lr in table_lrs:
        torch.manual_seed(seed)
        candidate = TupleHeads(dim, num_codebooks, cardinality, chained=True, init=list(independent.linears),
                               rank=rank)
        epochs, held_out = fit_heads(candidate, h_train, tuples_train, candidate.tables.parameters(), seed=seed,
                                     lr=table_lr, groups=groups)
        if held_out < best_held_out:
            best_held_out, chained = held_out, candidate
            info.update({'epochs_chained': epochs, 'table_lr': table_lr})
    return independent, chained, info


def tuple_nll_bits(heads: TupleHeads, h: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
    """NLL of each tuple in bits, per codebook [N, K] (no gradient)."""
    with torch.no_grad():
        columns = [F.cross_entropy(heads.logits(h, tuples, k), tuples[:, k], reduction='none')
                   for k in range(len(heads.linears))]
        return torch.stack(columns, dim=1) / _LN2


def bootstrap_interval(values: torch.Tensor, groups: torch.Tensor, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tp.Tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-tuple `values`, resampling whole groups (time blocks of a
    piece: neighbouring tuples are not independent draws).

    Args:
        values (torch.Tensor): one value per tuple [N].
        groups (torch.Tensor): group of each tuple [N].
    Returns:
        (low, high) at `level`.
    """
    names, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(len(names), dtype=torch.float64).index_add_(0, inverse, values.double())
    counts = torch.zeros(len(names), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(values).double())
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, len(names), (resamples, len(names)), generator=generator)
    means = sums[draws].sum(1) / counts[draws].sum(1)
    tail = (1 - level) / 2
    return float(torch.quantile(means, tail)), float(torch.quantile(means, 1 - tail))


def _summarize(result: tp.Dict[str, tp.Any], nll_independent: torch.Tensor, nll_chained: torch.Tensor,
               groups: torch.Tensor, seed: int) -> tp.Dict[str, tp.Any]:
    """The per-frame NLLs of both heads, the cost, its interval (groups resampled) and its reading."""
    for name, nll in (('independent', nll_independent), ('chained', nll_chained)):
        per_codebook = nll.mean(0).tolist()
        result[f'nll_{name}_bits'] = sum(per_codebook)
        result[f'nll_{name}_bits_q'] = per_codebook
    result['cost_bits'] = result['nll_independent_bits'] - result['nll_chained_bits']
    low, high = bootstrap_interval(nll_independent.sum(1) - nll_chained.sum(1), groups, seed=seed)
    result['cost_bits_ci95'] = [low, high]
    result['detected'] = low > 0
    result['reading'] = describe_cost(result['cost_bits'], low, high)
    return result


def describe_cost(cost: float, low: float, high: float) -> str:
    """A cost as it may be claimed: with its interval, or as a bound when the interval includes 0. An interval
    wholly below 0 bounds nothing: the true cost is never negative, so the chained heads' tables fitted one piece's
    dependence that the scored music does not share (the estimate is biased low there)."""
    if low > 0:
        return f"{cost:.3f} bits/frame (95% CI {low:.3f} to {high:.3f})"
    if high < 0:
        return (f"not detected, no bound: the chained heads score worse on unseen music, {cost:.3f} bits/frame "
                f"(95% CI {low:.3f} to {high:.3f})")
    return f"not detected, below {high:.3f} bits/frame (95% CI {low:.3f} to {high:.3f})"


def factorization_cost(h_train: torch.Tensor, tuples_train: torch.Tensor, h_valid: torch.Tensor,
                       tuples_valid: torch.Tensor, cardinality: int, seed: int = 0,
                       init: tp.Optional[tp.Sequence[nn.Linear]] = None, linear_lr: float = 1e-3,
                       table_lrs: tp.Sequence[float] = (1e-2, 1e-3), rank: tp.Optional[int] = None,
                       groups_train: tp.Optional[torch.Tensor] = None,
                       groups_valid: tp.Optional[torch.Tensor] = None) -> tp.Dict[str, tp.Any]:
    """Fit both heads on the train contexts (`fit_pair`) and score them on the valid ones.

    Args:
        groups_train, groups_valid (torch.Tensor, optional): group of each tuple (`time_blocks`): the held-out
            split and the bootstrap resample whole groups (None: each tuple on its own).
    Returns:
        `nll_independent_bits`, `nll_chained_bits` (per frame, summed over codebooks), `cost_bits` (their
        difference), `cost_bits_ci95` (bootstrap over valid groups), `detected`, `reading`, the per-codebook
        values, and the epochs each fit ran.
    """
    result: tp.Dict[str, tp.Any] = {'train_tuples': len(h_train), 'valid_tuples': len(h_valid), 'seed': seed,
                                    'rank': rank}
    independent, chained, info = fit_pair(h_train, tuples_train, cardinality, seed=seed, init=init,
                                          linear_lr=linear_lr, table_lrs=table_lrs, rank=rank, groups=groups_train)
    result.update(info)
    groups = torch.arange(len(h_valid)) if groups_valid is None else groups_valid
    return _summarize(result, tuple_nll_bits(independent, h_valid, tuples_valid),
                      tuple_nll_bits(chained, h_valid, tuples_valid), groups, seed)


def crossfit_cost(h: torch.Tensor, tuples: torch.Tensor, pieces: torch.Tensor, groups: torch.Tensor,
                  cardinality: int, seed: int = 0, init: tp.Optional[tp.Sequence[nn.Linear]] = None,
                  **kwargs: tp.Any) -> tp.Dict[str, tp.Any]:
    """The cost on data the LM never trained on: the pieces are split in two halves; heads fitted on one half
    score the other, and the other way round, so every tuple is scored by heads that never saw its piece.

    Args:
        h, tuples: contexts [N, D] and tuples [N, K] of (valid) segments.
        pieces (torch.Tensor): piece (audio file) of each tuple [N]: the halves never share one (segments of one
            piece overlap).
        groups (torch.Tensor): group of each tuple [N] (`time_blocks`): held-out splits and the bootstrap
            resample whole groups.
    Returns:
        As `factorization_cost`, with `fit: 'crossfit'`.
    """
    names = torch.unique(pieces)
    if len(names) < 2:
        raise ValueError("cross-fitting needs tuples from at least 2 pieces: collect from a split with more files, or "
                         "fit on the train split (--fit train)")
    generator = torch.Generator().manual_seed(seed)
    order = names[torch.randperm(len(names), generator=generator)]
    halves = [order[:len(order) // 2], order[len(order) // 2:]]
    nll_independent = torch.zeros(len(h), tuples.shape[1])
    nll_chained = torch.zeros(len(h), tuples.shape[1])
    result: tp.Dict[str, tp.Any] = {'fit': 'crossfit', 'valid_tuples': len(h), 'seed': seed,
                                    'rank': kwargs.get('rank'), 'pieces': len(names), 'folds': []}
    for fold, (fit_pieces, score_pieces) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        fit_rows = torch.isin(pieces, fit_pieces)
        score_rows = torch.isin(pieces, score_pieces)
        independent, chained, info = fit_pair(h[fit_rows], tuples[fit_rows], cardinality, seed=seed + fold,
                                              init=init, groups=groups[fit_rows], **kwargs)
        nll_independent[score_rows] = tuple_nll_bits(independent, h[score_rows], tuples[score_rows])
        nll_chained[score_rows] = tuple_nll_bits(chained, h[score_rows], tuples[score_rows])
        result['folds'].append({'fit_tuples': int(fit_rows.sum()), 'scored_tuples': int(score_rows.sum()), **info})
    result = _summarize(result, nll_independent, nll_chained, groups, seed)
    if result['cost_bits_ci95'][1] < 0:
        # Measured on the embedded valid split (4 pieces, 2 per half): 3 of 6 LMs read so (docs/RESULTS.md).
        per_half = ' or '.join(sorted({str(len(half)) for half in halves}))
        result['reading'] += (f"; each half's tables were fitted on {per_half} pieces and learned pairings the other "
                              "half does not share: with few valid pieces, fit on train segments (--fit train)")
    return result


def step_tuple_delays(lm: tp.Any) -> tp.List[int]:
    """Delays of the tuple the LM samples in one step, or a clear error for patterns that sample fewer codebooks."""
    from .solvers.musicgen_mmd import pattern_step_delays
    delays = pattern_step_delays(lm.pattern_provider, lm.num_codebooks)
    if not delays:
        raise ValueError(f"{type(lm.pattern_provider).__name__} samples fewer than all {lm.num_codebooks} codebooks "
                         "per step: there is no factorized tuple to measure (use a delay or parallel LM).")
    return delays


@torch.no_grad()
def lm_contexts(lm: tp.Any, tokens: torch.Tensor, condition_tensors: tp.Any,
                counts: tp.Optional[tp.Sequence[int]] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contexts h and the one-step tuples they predict, for the codes `tokens` [B, K, T] of a frozen LM.

    Args:
        lm: AudioCraft `LMModel` (eval mode).
        tokens (torch.Tensor): codes [B, K, T].
        condition_tensors: the LM's condition tensors for the batch (`lm.condition_provider(tokenized)`).
        counts (list of int, optional): frames of each item that come from real audio (a short segment is
            zero-padded): tuples holding a padded frame are left out.
    Returns:
        h [N, D] (the transformer output feeding the LM's per-codebook linears), tuples [N, K], one row per
        complete tuple (q_1[t - d_1], ..., q_K[t - d_K]), the batch item of each row [N], and its frame t [N].
    """
    delays = step_tuple_delays(lm)
    captured: tp.List[torch.Tensor] = []
    handle = lm.linears[0].register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    try:
        output = lm.compute_predictions(tokens, [], condition_tensors)
    finally:
        handle.remove()
    B, K, T = tokens.shape
    # With a `prepend` fuser the transformer's output starts with the condition positions, which AudioCraft drops
    # from the logits only: the pattern's steps are the last S positions.
    steps = lm.pattern_provider.get_pattern(T).build_pattern_sequence(
        tokens.contiguous(), lm.special_token_id, keep_only_valid_steps=True)[0].shape[-1]
    h = captured[0][:, -steps:]  # [B, S, D]
    # the context that predicts each code, by the pattern's own reverting: [B, D, K, T]
    pattern = lm.pattern_provider.get_pattern(T)
    expanded = h.permute(0, 2, 1)[:, :, None, :].expand(B, h.shape[-1], K, h.shape[1]).contiguous()
    per_code, _, _ = pattern.revert_pattern_logits(expanded, float('nan'))
    latest = max(delays)
    times = torch.arange(latest, T)
    # a tuple counts where every entry has a valid prediction (the pattern's mask)
    valid = torch.stack([output.mask[:, k, times - delays[k]] for k in range(K)]).all(dim=0)  # [B, N_t]
    if counts is not None:  # the tuple at t holds frames t - d_k <= t: real where t is
        valid &= times[None, :] < torch.tensor([int(c) for c in counts])[:, None]
    contexts = [per_code[:, :, k, times - delays[k]].permute(0, 2, 1)[valid] for k in range(K)]  # K x [N, D]
    for other in contexts[1:]:  # every entry of a tuple is predicted from the same step's context
        if not torch.allclose(other, contexts[0]):
            raise RuntimeError("The LM's pattern does not predict its one-step tuple from one context.")
    tuples = torch.stack([tokens[:, k, times - delays[k]] for k in range(K)], dim=-1)[valid]  # [N, K]
    items = torch.arange(B)[:, None].expand(B, len(times))[valid]
    return contexts[0], tuples, items, times[None, :].expand(B, len(times))[valid]


def time_blocks(pieces: torch.Tensor, frames: torch.Tensor, block: int) -> torch.Tensor:
    """Group of each tuple: the block of `block` frames of its piece that its frame falls in. Random segments of
    one piece overlap, so the same frame comes back in several segments: grouped by segment it could be held out in
    one and fitted in another; grouped by its time in the piece it never is.

    Args:
        pieces (torch.Tensor): piece of each tuple [N].
        frames (torch.Tensor): frame of each tuple in its piece (segment start + frame in the segment) [N].
        block (int): frames per block (the segment's length: a segment spans at most 2 blocks).
    Returns:
        Group ids 0..G-1 [N].
    """
    keys = torch.stack([pieces.long(), torch.div(frames.long(), block, rounding_mode='floor')], dim=1)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


class Collected(tp.NamedTuple):
    """Contexts [N, D], tuples [N, K], and for each tuple its piece (audio file) and its time block in the piece
    (`time_blocks`) [N]."""
    h: torch.Tensor
    tuples: torch.Tensor
    pieces: torch.Tensor
    blocks: torch.Tensor


def collect(musicgen: tp.Any, manifest: str, segment_duration: float, clips: int, batch_size: int = 8,
            seed: int = 0) -> Collected:
    """Contexts and tuples of `clips` random segments of a manifest's music (descriptions from the sidecars),
    without the tuples of zero-padded frames (segments shorter than `segment_duration`).

    Args:
        musicgen: AudioCraft `MusicGen` (its `lm` and `compression_model`).
        manifest (str): AudioCraft manifest folder or file (`egs/embedded_music/valid`).
        segment_duration (float): seconds per segment (the LM's training segment).
        clips (int): number of segments.
    Returns:
        `Collected`, on CPU.
    """
    from .solvers.musicgen_mmd import valid_token_counts
    from audiocraft.data.music_dataset import MusicDataset
    dataset = MusicDataset.from_meta(manifest, segment_duration=segment_duration,
                                     sample_rate=musicgen.sample_rate, channels=musicgen.audio_channels,
                                     num_samples=clips, return_info=True, shuffle=True, shuffle_seed=seed)
    # AudioDataset draws each segment's seed from Python's `random`: seeding it makes the segments reproducible
    random.seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collater)
    lm, device = musicgen.lm, musicgen.device
    h_all, tuples_all, pieces_all, frames_all = [], [], [], []
    piece_ids: tp.Dict[str, int] = {}
    frame_rate = musicgen.compression_model.frame_rate
    for audio, infos in loader:
        tokens, _ = musicgen.compression_model.encode(audio.to(device))
        attributes = [info.to_condition_attributes() for info in infos]
        condition_tensors = lm.condition_provider(lm.condition_provider.tokenize(attributes))
        counts = valid_token_counts((audio, infos), torch.ones_like(tokens, dtype=torch.bool), frame_rate)
        h, tuples, items, frames = lm_contexts(lm, tokens, condition_tensors, counts)
        items = items.cpu()
        pieces = torch.tensor([piece_ids.setdefault(str(info.meta.path), len(piece_ids)) for info in infos])
        starts = torch.tensor([round(info.seek_time * frame_rate) for info in infos])
        h_all.append(h.float().cpu())
        tuples_all.append(tuples.cpu())
        pieces_all.append(pieces[items])
        frames_all.append(starts[items] + frames.cpu())
    pieces = torch.cat(pieces_all)
    block = max(1, round(segment_duration * frame_rate))
    return Collected(torch.cat(h_all), torch.cat(tuples_all), pieces, time_blocks(pieces, torch.cat(frames_all), block))


FIT_MODES = ('crossfit', 'train')


def measure(model: str, clips: int = 256, valid_clips: tp.Optional[int] = None, seed: int = 0,
            train_manifest: tp.Optional[str] = None, valid_manifest: tp.Optional[str] = None,
            device: tp.Optional[str] = None, rank: tp.Optional[int] = None, fit: str = 'crossfit'
            ) -> tp.Dict[str, tp.Any]:
    """The factorization cost of an LM (export folder or LM XP), with a 95% interval over valid time blocks.

    Args:
        fit (str): 'crossfit' (default): the heads are fitted on valid segments the LM never trained on, one half
            of the pieces scoring the other (`crossfit_cost`; `valid_clips` segments, default `clips`); 'train':
            fitted on `clips` train segments, scored on `valid_clips` (default clips / 4) valid ones. Given its
            context h, an LM leaves less dependence on segments it memorised: fitting on them reads the cost low.
            Either way the LM's own NLL on train and on valid segments is reported (`lm_gap_bits`: how much it
            memorised).
    Returns:
        The cost's result, plus the model, the splits and the tuple's delays.
    """
    if fit not in FIT_MODES:
        raise ValueError(f"fit={fit!r} is unknown: use one of {FIT_MODES}")
    from audiocraft.models import MusicGen
    from .export import resolve_model
    from .paths import REPO_ROOT
    from .xps import read_export_record
    folder = resolve_model(model)
    provenance = read_export_record(folder)
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    musicgen = MusicGen.get_pretrained(str(folder), device=device)
    lm = musicgen.lm
    delays = step_tuple_delays(lm)
    segment = float(provenance.get('trained_segment_duration') or lm.cfg.dataset.segment_duration)
    manifests = {}
    for split, given in (('train', train_manifest), ('valid', valid_manifest)):
        path = Path(given or lm.cfg.datasource[split])
        manifests[split] = str(path if path.is_absolute() else REPO_ROOT / path)
    init = [linear.float().cpu() for linear in lm.linears]
    if fit == 'crossfit':
        valid = collect(musicgen, manifests['valid'], segment, valid_clips or clips, seed=seed)
        train = collect(musicgen, manifests['train'], segment, max(1, clips // 4), seed=seed)  # for the LM's gap
        result = crossfit_cost(valid.h, valid.tuples, valid.pieces, valid.blocks, lm.card, seed=seed, init=init,
                               rank=rank)
    else:
        train = collect(musicgen, manifests['train'], segment, clips, seed=seed)
        valid = collect(musicgen, manifests['valid'], segment, valid_clips or max(1, clips // 4), seed=seed)
        result = factorization_cost(train.h, train.tuples, valid.h, valid.tuples, lm.card, seed=seed, init=init,
                                    rank=rank, groups_train=train.blocks, groups_valid=valid.blocks)
        result['fit'] = 'train'
    lm_heads = TupleHeads(train.h.shape[1], train.tuples.shape[1], lm.card, chained=False, init=init)
    result['lm_nll_train_bits'] = float(tuple_nll_bits(lm_heads, train.h, train.tuples).sum(1).mean())
    result['lm_nll_valid_bits'] = float(tuple_nll_bits(lm_heads, valid.h, valid.tuples).sum(1).mean())
    result['lm_gap_bits'] = result['lm_nll_valid_bits'] - result['lm_nll_train_bits']
    result.update({'model': str(folder), 'lm_sig': provenance.get('lm_sig'), 'tokenizer': provenance.get('tokenizer'),
                   'delays': delays, 'segment_duration': segment, **{f'{k}_manifest': v for k, v in manifests.items()}})
    return result


ROW_HEADER = ("| LM | tokenizer | fit | NLL independent (bits/frame) | NLL chained | cost (bits/frame, 95% CI) | "
              "LM valid - train NLL | tuples |\n|---|---|---|---|---|---|---|---|")


def _row(result: tp.Dict[str, tp.Any]) -> str:
    reading = result.get('reading') or f"{result['cost_bits']:.3f}"
    gap = f"{result['lm_gap_bits']:.3f}" if 'lm_gap_bits' in result else 'n/a'
    return (f"| {result['lm_sig'] or result['model']} | {result['tokenizer']} | {result.get('fit', 'train')} | "
            f"{result['nll_independent_bits']:.3f} | {result['nll_chained_bits']:.3f} | {reading} | {gap} | "
            f"{result.get('train_tuples', '-')}/{result['valid_tuples']} |")


def measure_xps(targets: tp.Sequence[str], scale: tp.Optional[str] = None, force: bool = False,
                epoch: tp.Optional[int] = None, **kwargs: tp.Any) -> tp.List[tp.Dict[str, tp.Any]]:
    """Run the diagnostic on the trained delay/parallel LMs of a grid or of XP signatures, writing each result to
    `<XP folder>/factorization*.json` (`xps.factorization_path`: what `audiocraft_mmd.report` shows); XPs measured
    before are read back unless `force`. Other XPs (tokenizers, unroll LMs, LMs without that checkpoint yet) are
    skipped.

    Args:
        scale (str, optional): a grid's scale, `small` or `small_v1` (`xps.resolve_targets`).
        epoch (int, optional): measure each LM's `checkpoint_{epoch}.th` (AudioCraft keeps one every
            `checkpoint.keep_every_states` epochs) rather than its last: LMs compared at equal updates.
    """
    from .solvers.musicgen_mmd import pattern_step_delays
    from .xps import factorization_path, is_lm, resolve_targets
    from audiocraft.models.builders import get_codebooks_pattern_provider
    results = []
    for xp in resolve_targets(targets, scale=scale):
        cfg = xp.cfg
        checkpoint = xp.folder / ('checkpoint.th' if epoch is None else f'checkpoint_{epoch}.th')
        if not is_lm(cfg) or not checkpoint.exists():
            continue
        if not pattern_step_delays(get_codebooks_pattern_provider(cfg.transformer_lm.n_q, cfg.codebooks_pattern),
                                   cfg.transformer_lm.n_q):
            continue
        out = factorization_path(xp.folder, epoch, kwargs.get('rank'), kwargs.get('fit', 'crossfit'))
        if out.exists() and not force:
            results.append(json.loads(out.read_text()))
            continue
        result = measure(xp.sig if epoch is None else str(checkpoint), seed=int(cfg.seed), **kwargs)
        result.update({'lm_sig': xp.sig, 'epoch': epoch})
        out.write_text(json.dumps(result, indent=1))
        results.append(result)
    return results


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    from .xps import add_scale_arguments
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.factorization', description=__doc__.split('\n')[0])
    parser.add_argument('targets', nargs='+', help="an LM export folder, LM XP signatures, or a grid name "
                        "(e.g. factorization_gap: every trained delay LM of it)")
    add_scale_arguments(parser)
    parser.add_argument('--force', action='store_true', help="measure XPs again even if factorization.json exists")
    parser.add_argument('--fit', choices=FIT_MODES, default='crossfit', help="crossfit (default): fit the heads on "
                        "valid segments the LM never trained on, one half of the pieces scoring the other; train: fit "
                        "on train segments, score on valid ones")
    parser.add_argument('--clips', type=int, default=256, help="segments to fit the heads on (default 256; with "
                        "crossfit, valid segments, and clips / 4 train segments for the LM's own gap)")
    parser.add_argument('--valid_clips', type=int, default=None, help="valid segments (default: crossfit clips, "
                        "train clips / 4)")
    parser.add_argument('--seed', type=int, default=0, help="for an export folder (XPs use their own seed)")
    parser.add_argument('--train', default=None, help="train manifest (default: the LM's datasource.train)")
    parser.add_argument('--valid', default=None, help="valid manifest (default: the LM's datasource.valid)")
    parser.add_argument('--rank', type=int, default=None, help="rank of the chained heads' pairwise tables "
                        "(default: full card x card tables)")
    parser.add_argument('--epoch', type=int, default=None, help="XPs: measure checkpoint_EPOCH.th (LMs at equal "
                        "updates) rather than the last checkpoint")
    parser.add_argument('--device', default=None)
    parser.add_argument('--out', type=Path, default=None, help="a folder target: write the result as JSON here")
    opts = parser.parse_args(argv)
    options = dict(clips=opts.clips, valid_clips=opts.valid_clips, train_manifest=opts.train,
                   valid_manifest=opts.valid, device=opts.device, rank=opts.rank, fit=opts.fit)
    if len(opts.targets) == 1 and ('/' in opts.targets[0] or Path(opts.targets[0]).exists()):
        results = [measure(opts.targets[0], seed=opts.seed, **options)]  # an export folder (or an XP folder)
        if opts.out is not None:
            opts.out.parent.mkdir(parents=True, exist_ok=True)
            opts.out.write_text(json.dumps(results[0], indent=1))
    else:
        results = measure_xps(opts.targets, scale=opts.scale, force=opts.force, epoch=opts.epoch, **options)
    print(ROW_HEADER)
    for result in results:
        print(_row(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
