"""Discrete dependence statistics between the codebooks of a residual VQ (torch only).

Given integer codes ``[B, K, T]`` (K codebooks of ``cardinality`` C symbols), accumulates symbol
counts and reports per-codebook entropy / perplexity / utilization, the K x K pairwise mutual
information matrix and the total correlation ``TC = sum_k H(q_k) - H(q_1, ..., q_K)``.

Estimation:

* Everything is computed from counts: per-codebook marginal counts (dense ``[K, C]``), pairwise
  joint counts and the K-way joint counts. The joint counts are kept **sparse** (sorted unique
  int64 keys ``c_i * C + c_j`` / ``sum_k c_k C^k`` plus counts, merged with ``torch.unique``), so
  their memory is ``O(min(N, C^2))`` per pair and ``O(min(N, C^K))`` for the K-way joint instead of
  ``6 * 2048^2`` dense cells. When ``C^K`` does not fit in int64 the K-way keys are rows ``[n, K]``
  (``torch.unique(dim=0)``).
* Entropies in bits, bias-corrected with Miller-Madow: ``H_MM = H_plugin + (m - 1) / (2 N ln 2)``
  with ``m`` the number of observed cells. MI and TC are the corresponding sums/differences of
  Miller-Madow entropies. Plug-in values are reported too.
* Shuffled baseline: the same estimators applied after permuting each codebook's samples
  independently (this only needs the marginal counts: a codebook's permuted sequence is a random
  arrangement of its symbol multiset). Under independence the corrected MI/TC is ~0, so the
  baseline tells signal from estimator bias; ``tc_excess = tc - tc_shuffled``.
* Undersampling: a joint is flagged undersampled when ``N < min_count_per_cell * m`` (fewer than 5
  samples per observed cell by default). With C = 2048 this is typical for the K-way joint (and
  even for pairs) at realistic N; TC is then dominated by bias and the result says so
  (``tc_undersampled`` + ``notes``) rather than presenting it as a confident number.
"""
import math
import typing as tp

import torch
import torch.distributed as dist

__all__ = ['CodebookDependence', 'codebook_dependence']

_LN2 = math.log(2.0)
_FLUSH_MIN = 1 << 20  # pending keys buffered before a merge (amortizes torch.unique)


def _merge(keys_a: tp.Optional[torch.Tensor], counts_a: tp.Optional[torch.Tensor],
           keys_b: torch.Tensor, counts_b: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Merge two (keys, counts) sparse histograms (keys 1-D int64 or 2-D rows)."""
    if keys_a is None or counts_a is None or keys_a.shape[0] == 0:
        keys, counts = keys_b, counts_b
    else:
        keys, counts = torch.cat([keys_a, keys_b]), torch.cat([counts_a, counts_b])
    dim = 0 if keys.dim() == 2 else None
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True, dim=dim)
    merged = torch.zeros(uniq.shape[0], dtype=torch.int64).index_add_(0, inverse, counts)
    return uniq, merged


class _SparseCounter:
    """Histogram over int64 keys (or int64 rows), accumulated lazily."""

    def __init__(self) -> None:
        self.keys: tp.Optional[torch.Tensor] = None
        self.counts: tp.Optional[torch.Tensor] = None
        self._pending: tp.List[torch.Tensor] = []
        self._pending_n = 0

    def add(self, keys: torch.Tensor) -> None:
        self._pending.append(keys)
        self._pending_n += keys.shape[0]
        current = 0 if self.keys is None else self.keys.shape[0]
        if self._pending_n >= max(_FLUSH_MIN, current):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        new = torch.cat(self._pending)
        self._pending, self._pending_n = [], 0
        dim = 0 if new.dim() == 2 else None
        uniq, counts = torch.unique(new, sorted=True, return_counts=True, dim=dim)
        self.keys, self.counts = _merge(self.keys, self.counts, uniq, counts.to(torch.int64))

    def state(self) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        self.flush()
        if self.counts is None or self.keys is None:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        return self.keys, self.counts


def _entropy_bits(counts: torch.Tensor, total: int) -> tp.Tuple[float, float, int]:
    """(plug-in entropy, Miller-Madow entropy, number of observed cells), in bits."""
    counts = counts[counts > 0]
    m = int(counts.numel())
    if total <= 0 or m == 0:
        return 0.0, 0.0, m
    p = counts.double() / float(total)
    plugin = float(-(p * torch.log2(p)).sum().item())
    return plugin, plugin + (m - 1) / (2.0 * total * _LN2), m


def _pair_keys(codes: torch.Tensor, i: int, j: int, cardinality: int) -> torch.Tensor:
    return codes[:, i] * cardinality + codes[:, j]


def _joint_keys(codes: torch.Tensor, cardinality: int) -> torch.Tensor:
    num_codebooks = codes.shape[1]
    if cardinality ** num_codebooks >= 2 ** 62:
        return codes.contiguous()                      # rows, unique(dim=0)
    keys = codes[:, 0].clone()
    for k in range(1, num_codebooks):
        keys = keys * cardinality + codes[:, k]
    return keys


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _all_gather_var(t: torch.Tensor) -> tp.List[torch.Tensor]:
    """all_gather of tensors whose first dim differs across ranks (CPU in, CPU out)."""
    device = _comm_device()
    world = dist.get_world_size()
    size = torch.tensor([t.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts),) + tuple(t.shape[1:]), dtype=t.dtype, device=device)
    padded[:t.shape[0]] = t.to(device)
    bufs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return [b[:c].cpu() for b, c in zip(bufs, counts)]


class CodebookDependence:
    """Accumulates codebook symbol counts and reports dependence statistics between codebooks.

    Args:
        cardinality: number of symbols per codebook (C).
        num_codebooks: number of codebooks (K >= 1; pairwise/TC need K >= 2).
        delays: optional per-codebook delays: statistics are then computed on the tuples a delay
            pattern samples jointly, ``(q_1[t - d_1], ..., q_K[t - d_K])`` for t in
            ``[max(d), T)`` (same convention as ``audiocraft_mmd.losses.align_delays``).
        seed: seed of the shuffled baseline's permutations (deterministic across ranks).
        min_count_per_cell: a joint with fewer samples per observed cell is flagged undersampled.

    Usage: ``update(codes)`` for each batch (int ``[B, K, T]``), optionally ``reduce()`` once all
    ranks are done (sums the counts over torch.distributed ranks; idempotent until the next
    ``update``), then ``compute()`` / ``to_metrics()``.
    """

    def __init__(self, cardinality: int, num_codebooks: int, delays: tp.Optional[tp.Sequence[int]] = None,
                 seed: int = 0, min_count_per_cell: float = 5.0):
        if int(cardinality) < 1 or int(cardinality) != cardinality:
            raise ValueError(f"cardinality must be a positive int, got {cardinality!r}")
        if int(num_codebooks) < 1 or int(num_codebooks) != num_codebooks:
            raise ValueError(f"num_codebooks must be a positive int, got {num_codebooks!r}")
        self.cardinality = int(cardinality)
        self.num_codebooks = int(num_codebooks)
        if delays is not None:
            delays = [int(d) for d in delays]
            if len(delays) != self.num_codebooks or any(d < 0 for d in delays):
                raise ValueError(f"delays must be {self.num_codebooks} non-negative ints, got {delays}")
        self.delays = delays
        self.seed = int(seed)
        self.min_count_per_cell = float(min_count_per_cell)
        self.pairs = [(i, j) for i in range(self.num_codebooks) for j in range(i + 1, self.num_codebooks)]
        self.reset()

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        self.num_samples = 0
        self.marginals = torch.zeros(self.num_codebooks, self.cardinality, dtype=torch.int64)
        self.pair_counts = {p: _SparseCounter() for p in self.pairs}
        self.joint_counts = _SparseCounter()
        self._global: tp.Optional[dict] = None

    def _prepare(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be an integer torch.Tensor [B, K, T], got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor [B, K, T], got dtype {codes.dtype}")
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes must have shape [B, K={self.num_codebooks}, T], got {tuple(codes.shape)}")
        codes = codes.detach().to('cpu', torch.int64)
        if codes.numel() > 0 and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got range "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        if self.delays is not None:
            max_delay = max(self.delays)
            num_frames = codes.shape[-1]
            if max_delay >= num_frames:
                raise ValueError(f"max(delays)={max_delay} must be < T={num_frames}")
            length = num_frames - max_delay
            codes = torch.stack([codes[:, k, max_delay - d: max_delay - d + length]
                                 for k, d in enumerate(self.delays)], dim=1)
        return codes.permute(0, 2, 1).reshape(-1, self.num_codebooks)   # [N, K]

    def _add_samples(self, samples: torch.Tensor) -> None:
        if samples.shape[0] == 0:
            return
        for k in range(self.num_codebooks):
            self.marginals[k] += torch.bincount(samples[:, k], minlength=self.cardinality)
        for (i, j), counter in self.pair_counts.items():
            counter.add(_pair_keys(samples, i, j, self.cardinality))
        if self.num_codebooks >= 2:
            self.joint_counts.add(_joint_keys(samples, self.cardinality))
        self.num_samples += int(samples.shape[0])

    def update(self, codes: torch.Tensor) -> None:
        """Accumulate counts from integer codes ``[B, K, T]`` (any device; summarized on CPU)."""
        self._add_samples(self._prepare(codes))
        self._global = None

    def reduce(self) -> None:
        """Sum the counts over torch.distributed ranks (no-op if not initialized / world of 1).

        The local counts are kept; the global ones are stored separately and used by ``compute``
        until the next ``update``, so calling ``reduce`` twice does not double count. Every rank
        must call it (collective).
        """
        if not _dist_ready():
            return
        device = _comm_device()
        marg = self.marginals.to(device, copy=True)  # all_reduce is in place: keep local counts
        total = torch.tensor([self.num_samples], dtype=torch.int64, device=device)
        dist.all_reduce(marg)
        dist.all_reduce(total)

        def gather_counter(counter: _SparseCounter) -> tp.Tuple[torch.Tensor, torch.Tensor]:
            keys, counts = counter.state()
            all_keys, all_counts = _all_gather_var(keys), _all_gather_var(counts)
            out_keys = torch.cat(all_keys)
            if out_keys.shape[0] == 0:
                return keys, counts
            return _merge(None, None, out_keys, torch.cat(all_counts))

        self._global = {
            'num_samples': int(total.item()),
            'marginals': marg.cpu(),
            'pairs': {p: gather_counter(c) for p, c in self.pair_counts.items()},
            'joint': gather_counter(self.joint_counts) if self.num_codebooks >= 2 else None,
        }

    # ------------------------------------------------------------------ estimation
    def _state(self) -> tp.Tuple[int, torch.Tensor, tp.Dict[tp.Tuple[int, int], torch.Tensor],
                                 tp.Optional[torch.Tensor]]:
        if self._global is not None:
            g = self._global
            joint = g['joint'][1] if g['joint'] is not None else None
            return g['num_samples'], g['marginals'], {p: c for p, (_, c) in g['pairs'].items()}, joint
        pairs = {p: c.state()[1] for p, c in self.pair_counts.items()}
        joint = self.joint_counts.state()[1] if self.num_codebooks >= 2 else None
        return self.num_samples, self.marginals, pairs, joint

    def _shuffled_counts(self, num_samples: int, marginals: torch.Tensor
                         ) -> tp.Tuple[tp.Dict[tp.Tuple[int, int], torch.Tensor], tp.Optional[torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        symbols = torch.arange(self.cardinality, dtype=torch.int64)
        cols = []
        for k in range(self.num_codebooks):
            seq = torch.repeat_interleave(symbols, marginals[k])
            cols.append(seq[torch.randperm(num_samples, generator=gen)])
        samples = torch.stack(cols, dim=1)
        pairs = {}
        for (i, j) in self.pairs:
            pairs[(i, j)] = torch.unique(_pair_keys(samples, i, j, self.cardinality), return_counts=True)[1]
        joint = None
        if self.num_codebooks >= 2:
            keys = _joint_keys(samples, self.cardinality)
            joint = torch.unique(keys, return_counts=True, dim=0 if keys.dim() == 2 else None)[1]
        return pairs, joint

    def _info(self, num_samples: int, h_marg: tp.List[tp.Tuple[float, float, int]],
              pairs: tp.Dict[tp.Tuple[int, int], torch.Tensor], joint: tp.Optional[torch.Tensor]) -> dict:
        num_codebooks = self.num_codebooks
        mi = [[0.0] * num_codebooks for _ in range(num_codebooks)]
        mi_plugin = [[0.0] * num_codebooks for _ in range(num_codebooks)]
        cells = [[0] * num_codebooks for _ in range(num_codebooks)]
        for k in range(num_codebooks):
            mi_plugin[k][k], mi[k][k], cells[k][k] = h_marg[k]
        for (i, j), counts in pairs.items():
            hp, hm, m = _entropy_bits(counts, num_samples)
            mi_plugin[i][j] = mi_plugin[j][i] = h_marg[i][0] + h_marg[j][0] - hp
            mi[i][j] = mi[j][i] = h_marg[i][1] + h_marg[j][1] - hm
            cells[i][j] = cells[j][i] = m
        tc = tc_plugin = 0.0
        joint_cells = 0
        if joint is not None:
            hp, hm, joint_cells = _entropy_bits(joint, num_samples)
            tc_plugin = sum(h[0] for h in h_marg) - hp
            tc = sum(h[1] for h in h_marg) - hm
        return {'mi': mi, 'mi_plugin': mi_plugin, 'pair_cells': cells, 'tc': tc, 'tc_plugin': tc_plugin,
                'joint_cells': joint_cells}

    def compute(self) -> dict:
        """Full result (python floats / nested lists; codebooks 0-indexed in the lists).

        Keys: ``num_samples``, ``cardinality``, ``num_codebooks``, ``delays``, ``estimator``
        ('miller_madow'), ``entropy`` / ``entropy_plugin`` ([K], bits), ``perplexity`` ([K],
        ``2 ** entropy_plugin``), ``utilization`` ([K], fraction of the C symbols used),
        ``mi`` / ``mi_plugin`` / ``mi_shuffled`` / ``mi_shuffled_plugin`` (K x K, bits; diagonal =
        entropy), ``mi_undersampled`` (K x K bools), ``pair_cells`` (K x K observed cells),
        ``mi_mean`` / ``mi_mean_plugin`` / ``mi_mean_shuffled`` (mean over pairs i < j),
        ``mi_excess`` (K x K, mi - mi_shuffled) / ``mi_mean_excess`` (a heuristic bias-subtracted
        value for undersampled pairs; it under-estimates strong dependence), ``tc`` /
        ``tc_plugin`` / ``tc_shuffled`` / ``tc_shuffled_plugin`` (bits), ``tc_excess`` (tc -
        tc_shuffled), ``tc_norm`` (tc / sum of entropies), ``joint_cells_observed``,
        ``joint_cells_possible`` (C^K), ``samples_per_joint_cell``, ``tc_undersampled`` (bool) and
        ``notes`` (list of str).
        """
        num_samples, marginals, pairs, joint = self._state()
        if num_samples == 0:
            raise ValueError("CodebookDependence.compute() called before any update() with samples")
        num_codebooks = self.num_codebooks
        h_marg = [_entropy_bits(marginals[k], num_samples) for k in range(num_codebooks)]
        real = self._info(num_samples, h_marg, pairs, joint)
        sh_pairs, sh_joint = self._shuffled_counts(num_samples, marginals)
        shuf = self._info(num_samples, h_marg, sh_pairs, sh_joint)
        threshold = self.min_count_per_cell
        mi_under = [[bool(i != j and num_samples < threshold * real['pair_cells'][i][j])
                     for j in range(num_codebooks)] for i in range(num_codebooks)]
        joint_cells = real['joint_cells']
        tc_under = bool(num_codebooks >= 2 and num_samples < threshold * joint_cells)
        sum_h = sum(h[1] for h in h_marg)
        possible = self.cardinality ** num_codebooks

        def pair_mean(mat: tp.List[tp.List[float]]) -> float:
            if not self.pairs:
                return 0.0
            return sum(mat[i][j] for i, j in self.pairs) / len(self.pairs)

        notes = []
        if tc_under:
            notes.append(
                f"K-way joint undersampled: {num_samples} samples for {joint_cells} observed joint cells "
                f"(< {threshold:g} per cell; {float(possible):.3g} possible). TC and tc_norm are dominated "
                f"by estimation bias (compare tc_shuffled={shuf['tc']:.3f} bits); trust the pairwise MI "
                "matrix (check mi_undersampled) rather than TC.")
        if any(any(row) for row in mi_under):
            bad = [f"({i + 1},{j + 1})" for i, j in self.pairs if mi_under[i][j]]
            notes.append(f"pairwise joints undersampled for pairs {', '.join(bad)}: compare mi with "
                         "mi_shuffled (the bias level) before reading them as dependence.")
        return {
            'num_samples': num_samples,
            'cardinality': self.cardinality,
            'num_codebooks': num_codebooks,
            'delays': list(self.delays) if self.delays is not None else None,
            'estimator': 'miller_madow',
            'entropy': [h[1] for h in h_marg],
            'entropy_plugin': [h[0] for h in h_marg],
            'perplexity': [2.0 ** h[0] for h in h_marg],
            'utilization': [h[2] / self.cardinality for h in h_marg],
            'mi': real['mi'],
            'mi_plugin': real['mi_plugin'],
            'mi_shuffled': shuf['mi'],
            'mi_shuffled_plugin': shuf['mi_plugin'],
            'mi_undersampled': mi_under,
            'pair_cells': real['pair_cells'],
            'mi_mean': pair_mean(real['mi']),
            'mi_mean_plugin': pair_mean(real['mi_plugin']),
            'mi_mean_shuffled': pair_mean(shuf['mi']),
            'mi_excess': [[a - b for a, b in zip(ra, rb)] for ra, rb in zip(real['mi'], shuf['mi'])],
            'mi_mean_excess': pair_mean(real['mi']) - pair_mean(shuf['mi']),
            'tc': real['tc'],
            'tc_plugin': real['tc_plugin'],
            'tc_shuffled': shuf['tc'],
            'tc_shuffled_plugin': shuf['tc_plugin'],
            'tc_excess': real['tc'] - shuf['tc'],
            'tc_norm': real['tc'] / sum_h if sum_h > 0 else 0.0,
            'joint_cells_observed': joint_cells,
            'joint_cells_possible': possible,
            'samples_per_joint_cell': num_samples / joint_cells if joint_cells else float('inf'),
            'tc_undersampled': tc_under,
            'notes': notes,
        }

    def to_metrics(self, prefix: str = '') -> tp.Dict[str, float]:
        """Flat float dict for logging; every key is prefixed by ``prefix``. Codebooks 1-indexed.

        Keys: ``entropy_q{k}`` (Miller-Madow, bits), ``entropy_plugin_q{k}``, ``ppl_q{k}``
        (2 ** plug-in entropy), ``util_q{k}`` (fraction of symbols used), ``mi_{i}{j}`` for i < j
        (Miller-Madow MI, bits; ``mi_{i}_{j}`` when K >= 10), ``mi_shuffled_{i}{j}``, ``mi_mean``,
        ``mi_mean_plugin``, ``mi_mean_shuffled``, ``mi_mean_excess`` (mi_mean - mi_mean_shuffled),
        ``mi_undersampled`` (1.0 if any pair is),
        ``tc``, ``tc_plugin``, ``tc_shuffled``, ``tc_excess``, ``tc_norm``, ``tc_undersampled``
        (0.0 / 1.0), ``samples_per_joint_cell``, ``num_samples``.
        """
        r = self.compute()
        out: tp.Dict[str, float] = {}
        sep = '_' if self.num_codebooks >= 10 else ''
        for k in range(self.num_codebooks):
            out[f'entropy_q{k + 1}'] = float(r['entropy'][k])
            out[f'entropy_plugin_q{k + 1}'] = float(r['entropy_plugin'][k])
            out[f'ppl_q{k + 1}'] = float(r['perplexity'][k])
            out[f'util_q{k + 1}'] = float(r['utilization'][k])
        for i, j in self.pairs:
            out[f'mi_{i + 1}{sep}{j + 1}'] = float(r['mi'][i][j])
            out[f'mi_shuffled_{i + 1}{sep}{j + 1}'] = float(r['mi_shuffled'][i][j])
        for key in ('mi_mean', 'mi_mean_plugin', 'mi_mean_shuffled', 'mi_mean_excess', 'tc', 'tc_plugin',
                    'tc_shuffled', 'tc_excess', 'tc_norm', 'samples_per_joint_cell', 'num_samples'):
            out[key] = float(r[key])
        out['mi_undersampled'] = float(any(any(row) for row in r['mi_undersampled']))
        out['tc_undersampled'] = float(r['tc_undersampled'])
        return {prefix + k: v for k, v in out.items()}


def codebook_dependence(codes: torch.Tensor, cardinality: int,
                        delays: tp.Optional[tp.Sequence[int]] = None) -> dict:
    """One-shot ``CodebookDependence(cardinality, K, delays)``, ``update(codes)``, ``compute()``."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        raise ValueError(f"codes must be an integer tensor [B, K, T], got {getattr(codes, 'shape', type(codes))}")
    metric = CodebookDependence(cardinality, codes.shape[1], delays)
    metric.update(codes)
    return metric.compute()
