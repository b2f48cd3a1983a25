"""Summarize XPs: `python -m audiocraft_mmd.report (GRID [--small|--small_v1] | SIG...) [--out DIR]`.

Prints a Markdown table (one row per setting: the XP overrides without the seed, mean +- std over seeds) of the
metrics the paper's questions need, read from each XP's Dora history (the last epoch that ran the stage), and
writes PNG plots into --out: total correlation minus its shuffled baseline, reconstruction quality and codebook
utilization against the weight, and the pairwise mutual-information heatmap of the first XP of each setting.
Tokenizers (compression XPs) and LMs (musicgen XPs: NLL in bits per frame, per-codebook cross-entropy, the
dependence of the modelled tokens on the LM's one-step tuple) get a table each. With `--dset NAME` the tokenizer
table's evaluate columns are the XPs' cross-domain evaluations on that preset (`python -m audiocraft_mmd.evaluate
--dset NAME`, written to `<XP folder>/evaluate_<NAME, / as _>.json`) instead of their history's. With `--against
SETTING` every setting is compared with that one, its XPs paired by seed (a 95% t interval and Welch's test).
"""
import argparse
from collections import OrderedDict
import math
from pathlib import Path
import sys
import typing as tp

from .xps import (add_scale_arguments, check_dset, cross_domain_path, factorization_path, is_lm, resolve_targets,
                  shown, tokenizer_ref, tokenizer_xp)

# (stage, key, column title, format). AudioCraft logs `sisnr` as the NEGATED SI-SNR: the report flips it back
# (`xps.shown`).
COLUMNS: tp.List[tp.Tuple[str, str, str, str]] = [
    ('evaluate', 'codes_tc', 'TC (bits, delay-aligned)', '.3f'),
    ('evaluate', 'codes_tc_excess', 'TC - shuffled', '.3f'),
    ('evaluate', 'codes_tc_norm', 'TC / sum H', '.3f'),
    ('evaluate', 'codes_mi_mean', 'mean pairwise MI', '.3f'),
    ('evaluate', 'codes_mi_mean_excess', 'MI - shuffled', '.3f'),
    ('evaluate', 'codes_util_min', 'min utilization', '.2f'),
    ('evaluate', 'sisnr', 'SI-SNR (dB)', '.2f'),
    ('evaluate', 'visqol', 'ViSQOL', '.2f'),
    ('valid', 'msspec', 'msspec', '.4f'),
    ('valid', 'mmd', 'term (valid)', '.3g'),
]


def lm_columns(num_codebooks: int) -> tp.List[tp.Tuple[str, str, str, str]]:
    """Columns of the LM table: NLL per frame (comparable across patterns), per-codebook CE, the tokens' dependence
    on the LM's one-step tuple, codebook use, and the generate stage's real-time factor."""
    return ([('valid', 'nll_bits_per_frame', 'NLL bits/frame (valid)', '.3f'),
             ('valid', 'nll_bits_per_frame_common', 'NLL bits/frame, common frames (valid)', '.3f'),
             ('best', 'nll_bits_per_frame', 'best valid NLL', '.3f'),
             ('best', 'updates', 'updates to best', '.0f'),
             ('factorization', 'cost_bits', 'factorization cost (bits/frame)', '.3f'),
             ('factorization', 'cost_ci_low', 'cost 95% CI low', '.3f'),
             ('factorization', 'cost_ci_high', 'cost 95% CI high', '.3f'),
             ('factorization', 'lm_gap_bits', 'LM NLL valid - train (bits/frame)', '.3f'),
             ('evaluate', 'nll_bits_per_frame', 'NLL bits/frame (evaluate)', '.3f')] +
            [('evaluate', f'ce_q{k}', f'CE q{k} (nats)', '.3f') for k in range(1, num_codebooks + 1)] +
            [('evaluate', 'codes_tc_excess', 'TC - shuffled (LM tuple)', '.3f'),
             ('evaluate', 'codes_util_min', 'min utilization', '.2f'),
             ('generate', 'rtf', 'generation s per audio s', '.2f')])


def columns_for(xps: tp.Sequence[tp.Any]) -> tp.List[tp.Tuple[str, str, str, str]]:
    """The LM columns when every XP is an LM, the tokenizer columns otherwise."""
    if xps and all(is_lm(xp.cfg) for xp in xps):
        return lm_columns(max(int(xp.cfg.transformer_lm.n_q) for xp in xps))
    return COLUMNS


def _last_with(history: tp.List[dict], stage: str) -> dict:
    for epoch in reversed(history):
        if stage in epoch:
            return epoch[stage]
    return {}


def _setting(argv: tp.Sequence[str]) -> str:
    # seed: what a setting averages over; num_threads: not part of an XP's signature (Dora excludes it).
    parts = [a for a in argv if not a.startswith(('seed=', 'solver=', 'num_threads='))]
    return ' '.join(parts) or '(defaults)'


def _mean_std(values: tp.List[float]) -> tp.Tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var)


def collect(xps: tp.Sequence[tp.Any], columns: tp.Optional[tp.List[tp.Tuple[str, str, str, str]]] = None,
            epoch: tp.Optional[int] = None, rank: tp.Optional[int] = None, dset: tp.Optional[str] = None,
            fit: str = 'crossfit') -> tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]]:
    """Group XPs by setting; each entry holds the sig, argv, epochs run and the metrics of `columns` (default: the
    tokenizer's COLUMNS).

    Args:
        epoch (int, optional): read each XP's history up to this epoch only (XPs compared at equal updates), and
            the factorization diagnostic run on that epoch's checkpoint.
        rank (int, optional): the diagnostic's result with pairwise tables of this rank (`--rank` there).
        fit (str): the diagnostic's result fitted this way (`--fit` there).
        dset (str, optional): tokenizers' evaluate metrics from their evaluation on this dataset preset
            (`evaluate --dset`), not from their history; an XP not evaluated there gets none.
    """
    columns = COLUMNS if columns is None else columns
    from .train import main
    groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]] = OrderedDict()
    for xp in xps:
        history = main.get_xp_history(xp)
        if epoch is not None:
            trained = [i for i, entry in enumerate(history) if 'train' in entry]
            history = history[:trained[epoch - 1] + 1] if len(trained) >= epoch else history
        # epochs that trained: an XP evaluated after a stop (`audiocraft_mmd.evaluate --commit`) has one more entry
        history_trained = [epoch for epoch in history if 'train' in epoch]
        row: tp.Dict[str, tp.Any] = {'sig': xp.sig, 'argv': list(xp.argv), 'epochs': len(history_trained),
                                     'cfg': xp.cfg, 'history': history}
        derived = _derived(xp, history, factorization_path(xp.folder, epoch, rank, fit)) if is_lm(xp.cfg) else {}
        if dset is not None and not is_lm(xp.cfg):
            derived = {'evaluate': _cross_domain(xp, dset, len(history_trained))}
        for stage, key, _, _ in columns:
            value = derived.get(stage, {}).get(key) if stage in derived else _last_with(history, stage).get(key)
            row[f'{stage}/{key}'] = shown(key, value)
        # Pairwise MI, keys codes_mi_{i}{j} with 1-based codebooks i < j.
        evaluated = derived['evaluate'] if 'evaluate' in derived else _last_with(history, 'evaluate')
        row['mi'] = {(int(k[-2]), int(k[-1])): v for k, v in evaluated.items()
                     if k.startswith('codes_mi_') and k[len('codes_mi_'):].isdigit()}
        groups.setdefault(_lm_setting(xp.argv) if is_lm(xp.cfg) else _setting(xp.argv), []).append(row)
    return groups


def _derived(xp: tp.Any, history: tp.List[dict], diagnostic: tp.Optional[Path] = None
             ) -> tp.Dict[str, tp.Dict[str, float]]:
    """What an LM's table needs beyond the last logged values: the best valid NLL and the updates it took (the
    plateau, with early stopping), and the factorization diagnostic's result if it ran (`diagnostic`, default the
    one of the last checkpoint, `xps.factorization_path`)."""
    import json
    valid = [(i, epoch['valid']['nll_bits_per_frame']) for i, epoch in enumerate(history, 1)
             if 'nll_bits_per_frame' in epoch.get('valid', {})]
    derived: tp.Dict[str, tp.Dict[str, float]] = {'best': {}, 'factorization': {}}
    if valid:
        epoch, best = min(valid, key=lambda item: item[1])
        derived['best'] = {'nll_bits_per_frame': best, 'updates': epoch * xp.cfg.optim.updates_per_epoch}
    diagnostic = factorization_path(xp.folder) if diagnostic is None else diagnostic
    if diagnostic.exists():
        result = json.loads(diagnostic.read_text())
        if 'cost_bits_ci95' in result:  # the 95% interval over valid segments, as two columns
            result['cost_ci_low'], result['cost_ci_high'] = result['cost_bits_ci95']
        derived['factorization'] = result
    return derived


def _cross_domain(xp: tp.Any, dset: str, epochs: int) -> tp.Dict[str, float]:
    """The evaluate metrics of `python -m audiocraft_mmd.evaluate --dset dset` on XP `xp` (empty, with a note on
    stderr, if it has not run; a note too if the XP's history has another number of epochs than the checkpoint
    evaluated then)."""
    import json
    path = cross_domain_path(xp.folder, dset)
    if not path.exists():
        print(f"XP {xp.sig}: not evaluated on {dset}: python -m audiocraft_mmd.evaluate --dset {dset} {xp.sig}",
              file=sys.stderr)
        return {}
    record = json.loads(path.read_text())
    if record.get('epochs') != epochs:
        print(f"XP {xp.sig}: its evaluation on {dset} is of a checkpoint at epoch {record.get('epochs')}, the table's "
              f"history has {epochs} epochs: rerun python -m audiocraft_mmd.evaluate --dset {dset} {xp.sig}",
              file=sys.stderr)
    return record['evaluate']


def _lm_setting(argv: tp.Sequence[str]) -> str:
    """An LM's setting, its tokenizer named by the tokenizer XP's own setting (seeds differ per tokenizer XP)."""
    parts = []
    for arg in argv:
        reference = tokenizer_ref(arg)
        if reference is not None:
            tokenizer = tokenizer_xp(reference)
            # an export folder, a path, or an XP not in this Dora folder: named as given
            arg = f'tokenizer[{reference if tokenizer is None else _setting(tokenizer.argv)}]'
        parts.append(arg)
    return _setting(parts)


def markdown_table(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], per_xp: bool = False,
                   columns: tp.Optional[tp.List[tp.Tuple[str, str, str, str]]] = None) -> str:
    """Markdown table: one row per setting with `mean ± std` per metric, or one row per XP (`per_xp`)."""
    columns = COLUMNS if columns is None else columns
    header = ['setting', 'XPs (epochs)' if not per_xp else 'XP (epochs), seed'] + [title for _, _, title, _ in columns]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for setting, rows in groups.items():
        for members in ([[r] for r in rows] if per_xp else [rows]):
            cells = [f'`{setting}`', ', '.join(f"{r['sig']} ({r['epochs']})" for r in members)]
            if per_xp:
                cells[-1] += f", {members[0]['cfg'].seed}"
            for stage, key, _, fmt in columns:
                mean, std = _mean_std([r[f'{stage}/{key}'] for r in members])
                cells.append('n/a' if math.isnan(mean) else
                             f'{mean:{fmt}} ± {std:{fmt}}' if len(members) > 1 else f'{mean:{fmt}}')
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def epoch_table(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], metric: str, fmt: str = '.2f') -> str:
    """Markdown table of one logged metric ('stage/key', e.g. 'valid/codes_util_min') per XP and epoch, under a
    line naming the metric (values as the tables show them: the negated keys flipped back)."""
    stage, _, key = metric.partition('/')
    epochs = max((r['epochs'] for rows in groups.values() for r in rows), default=0)
    header = ['setting', 'XP, seed'] + [str(epoch) for epoch in range(1, epochs + 1)]
    lines = [f'`{metric}` per epoch:', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for setting, rows in groups.items():
        for r in rows:
            values = [epoch.get(stage, {}).get(key) for epoch in r['history'] if 'train' in epoch]
            cells = ['' if v is None else f'{shown(key, v):{fmt}}' for v in values]
            cells += [''] * (epochs - len(cells))
            lines.append('| ' + ' | '.join([f'`{setting}`', f"{r['sig']}, {r['cfg'].seed}"] + cells) + ' |')
    return '\n'.join(lines)


def against_table(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], baseline: str, metric: str,
                  fmt: str = '.3f') -> str:
    """Markdown table of every setting against `baseline` on one metric ('stage/key', a column of the tables).

    Per setting: the XPs paired with the baseline's by seed, the mean per-seed difference with its 95% t interval
    (df = pairs - 1; its half-width is the smallest difference these seeds can tell from 0 at their spread), and
    Welch's unpaired t-test against all the baseline's XPs (two-sided p). Fewer than two pairs (or XPs on a side)
    give n/a, not a number.

    Args:
        groups: `collect`'s output.
        baseline (str): a setting of `groups`, as the tables' first column names it.
        metric (str): the compared value, e.g. 'evaluate/codes_tc_excess'.
    Returns:
        str: the table under a line naming the metric and the baseline.
    """
    from scipy import stats
    if baseline not in groups:
        raise ValueError(f"--against {baseline!r} is not a setting of these XPs; the settings are: "
                         + ', '.join(repr(s) for s in groups))
    rows = [r for members in groups.values() for r in members]
    if not any(metric in r for r in rows):
        keys = sorted({k for r in rows for k in r if '/' in k})
        raise ValueError(f"--against-metric {metric!r} is not a column of these XPs; choose one of: "
                         + ', '.join(keys))

    def values(members: tp.List[tp.Dict[str, tp.Any]]) -> tp.Dict[int, float]:
        return {int(r['cfg'].seed): r[metric] for r in members
                if r.get(metric) is not None and not math.isnan(r[metric])}

    base = values(groups[baseline])
    mean_base = _mean_std(list(base.values()))[0]
    header = ['setting', 'seeds paired', 'setting mean', 'baseline mean', 'difference (95% t interval)',
              'Welch t (df), p']
    lines = [f'`{metric}` against `{baseline}` ({len(base)} XPs):', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for setting, members in groups.items():
        if setting == baseline:
            continue
        mine = values(members)
        seeds = sorted(set(mine) & set(base))
        paired = 'n/a'
        if len(seeds) >= 2:
            test = stats.ttest_rel([mine[s] for s in seeds], [base[s] for s in seeds])
            low, high = test.confidence_interval(0.95)
            paired = f'{(low + high) / 2:+{fmt}} ({low:+{fmt}} to {high:+{fmt}})'
        elif seeds:
            paired = f'{mine[seeds[0]] - base[seeds[0]]:+{fmt}} (one pair: no interval)'
        welch = 'n/a'
        if len(mine) >= 2 and len(base) >= 2:
            test = stats.ttest_ind(list(mine.values()), list(base.values()), equal_var=False)
            welch = f'{test.statistic:.2f} ({test.df:.1f}), {test.pvalue:.3f}'  # df: Welch-Satterthwaite's
        mean_mine = _mean_std(list(mine.values()))[0]
        cells = [f'`{setting}`', ', '.join(str(s) for s in seeds) or 'none',
                 'n/a' if math.isnan(mean_mine) else f'{mean_mine:{fmt}}',
                 'n/a' if math.isnan(mean_base) else f'{mean_base:{fmt}}', paired, welch]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], out: Path) -> tp.List[Path]:
    """Write weight plots (if the XPs differ in mmd.weight: TC - shuffled, SI-SNR and min utilization, mean and
    std over seeds, one line per term variant) and one MI heatmap per XP; return the paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    written = []
    by_weight: tp.Dict[tp.Tuple[str, float], tp.List[dict]] = {}
    for rows in groups.values():
        for r in rows:
            if 'mmd' not in r['cfg']:
                continue  # LM XPs: no weight axis
            mmd = r['cfg'].mmd
            variant = f"{mmd.pattern}/{mmd.bandwidth}" + (f"/guard {mmd.warmup.guard}" if mmd.warmup.guard else '')
            by_weight.setdefault((variant, float(r['cfg'].mmd.weight)), []).append(r)
    if len({w for _, w in by_weight}) > 1:
        # TC minus its shuffled baseline: the raw TC of a collapsed codebook is low without any independence.
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for ax, (stage, key, title) in zip(axes, [('evaluate', 'codes_tc_excess', 'delay-aligned TC - shuffled (bits)'),
                                                  ('evaluate', 'sisnr', 'SI-SNR (dB)'),
                                                  ('evaluate', 'codes_util_min', 'min utilization')]):
            for variant in sorted({v for v, _ in by_weight}):
                weights = sorted(w for v, w in by_weight if v == variant)
                stats = [_mean_std([r[f'{stage}/{key}'] for r in by_weight[(variant, w)]]) for w in weights]
                xs = [max(w, 1e-1) for w in weights]  # weight 0 drawn at 0.1 on the log axis
                ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker='o', capsize=3,
                            label=variant)
            ax.set_xscale('log')
            ax.set_xlabel('mmd.weight (0 drawn at 0.1)')
            ax.set_title(title)
            ax.legend(fontsize=7)
        written.append(_save_figure(fig, out / 'weight_sweep.png', plt))
    path = _plot_cost_against_dependence(groups, out, plt)
    if path is not None:
        written.append(path)
    path = _plot_term_against_dependence(groups, out, plt)
    if path is not None:
        written.append(path)
    for row in (r for rows in groups.values() for r in rows):
        if not row.get('mi'):
            continue
        k = max(max(pair) for pair in row['mi'])
        matrix = [[row['mi'].get((min(i, j), max(i, j)), math.nan) if i != j else math.nan
                   for j in range(1, k + 1)] for i in range(1, k + 1)]
        fig, ax = plt.subplots(figsize=(4, 3.4))
        image = ax.imshow(matrix, cmap='viridis')
        fig.colorbar(image, ax=ax, label='bits')
        ax.set_xticks(range(k), [f'q{j}' for j in range(1, k + 1)])
        ax.set_yticks(range(k), [f'q{i}' for i in range(1, k + 1)])
        ax.set_title(f"pairwise MI, {row['sig']}", fontsize=9)
        written.append(_save_figure(fig, out / f"mi_{row['sig']}.png", plt))
    return written


def _save_figure(fig: tp.Any, path: Path, plt: tp.Any) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a figure; return its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def distinct_parts(settings: tp.Sequence[str]) -> tp.Dict[str, str]:
    """Each setting (space-separated overrides) without the overrides all of them share, for a legend."""
    shared = set.intersection(*(set(setting.split()) for setting in settings)) if len(settings) > 1 else set()
    return {setting: ' '.join(part for part in setting.split() if part not in shared) or setting
            for setting in settings}


def _plot_cost_against_dependence(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], out: Path,
                                  plt: tp.Any) -> tp.Optional[Path]:
    """Scatter of each delay LM's factorization cost against its tokenizer XP's delay-aligned TC - shuffled
    (evaluate), one colour per setting; None when no LM has both."""
    from .train import main
    points: tp.Dict[str, tp.List[tp.Tuple[float, float, float, float]]] = OrderedDict()
    for setting, rows in groups.items():
        for r in rows:
            cost = r.get('factorization/cost_bits')
            low, high = r.get('factorization/cost_ci_low'), r.get('factorization/cost_ci_high')
            if cost is None or 'compression_model_checkpoint' not in r['cfg']:
                continue
            tokenizer = tokenizer_xp(r['cfg'].compression_model_checkpoint)
            if tokenizer is None:  # a tokenizer given as a folder or trained elsewhere: no history here
                continue
            tc = _last_with(main.get_xp_history(tokenizer), 'evaluate').get('codes_tc_excess')
            if tc is not None:
                points.setdefault(setting, []).append((tc, cost, cost if low is None else low,
                                                       cost if high is None else high))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = distinct_parts(list(points))
    for setting, values in points.items():
        # the cost's 95% interval over valid segments as a vertical bar
        ax.errorbar([v[0] for v in values], [v[1] for v in values],
                    yerr=[[v[1] - v[2] for v in values], [v[3] - v[1] for v in values]], fmt='o', capsize=3,
                    label=labels[setting][:80])
    ax.axhline(0., color='grey', linewidth=0.5)
    ax.set_xlabel("tokenizer: delay-aligned TC - shuffled (bits, evaluate)")
    ax.set_ylabel("LM: factorization cost (bits/frame, valid; 95% CI)")
    ax.legend(fontsize=6)
    return _save_figure(fig, out / 'cost_vs_tc.png', plt)


def _plot_term_against_dependence(groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]], out: Path,
                                  plt: tp.Any) -> tp.Optional[Path]:
    """Per tokenizer XP with the term on, its valid term against its codes' valid TC - shuffled over training, one
    point per epoch joined in order (does the term track the dependence?), one panel per seed; None when no XP of
    `groups` has a back-propagated term."""
    series: tp.Dict[int, tp.List[tp.Tuple[str, str, tp.List[float], tp.List[float]]]] = OrderedDict()
    labels = distinct_parts(list(groups))
    # one colour per setting in every panel, whichever settings a seed's panel lacks
    colours = {setting: f'C{i % 10}' for i, setting in enumerate(groups)}
    for setting, rows in groups.items():
        for r in rows:
            if 'mmd' not in r['cfg'] or float(r['cfg'].mmd.weight) <= 0:
                continue
            points = [(epoch['valid']['codes_tc_excess'], epoch['valid']['mmd']) for epoch in r['history']
                      if {'codes_tc_excess', 'mmd'} <= set(epoch.get('valid', {}))]
            if points:
                series.setdefault(int(r['cfg'].seed), []).append(
                    (f"{labels[setting][:60]} ({r['sig']})", colours[setting], [x for x, _ in points],
                     [y for _, y in points]))
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4), squeeze=False)
    for ax, (seed, lines) in zip(axes[0], series.items()):
        for label, colour, xs, ys in lines:
            ax.plot(xs, [max(y, 1e-12) for y in ys], marker='o', markersize=3, label=label, color=colour)
            ax.annotate('end', (xs[-1], max(ys[-1], 1e-12)), fontsize=6)
        ax.set_yscale('log')
        ax.set_xlabel("codes: delay-aligned TC - shuffled (bits, valid)")
        ax.set_ylabel("term (valid, its own units)")
        ax.set_title(f"seed {seed}: one point per epoch", fontsize=9)
        ax.legend(fontsize=6)
    return _save_figure(fig, out / 'term_vs_tc.png', plt)


def main(argv: tp.Optional[tp.List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m audiocraft_mmd.report', description=__doc__.split('\n')[0])
    parser.add_argument('targets', nargs='+', help="a grid name (module under grids/) or XP signatures")
    add_scale_arguments(parser)
    parser.add_argument('--out', type=Path, default=None, help="folder for the PNG plots")
    parser.add_argument('--per-xp', action='store_true', help="also print one row per XP")
    parser.add_argument('--per-epoch', metavar='STAGE/KEY', action='append', default=[],
                        help="also print this logged metric per XP and epoch, e.g. valid/codes_util_min")
    parser.add_argument('--epoch', type=int, default=None, help="each XP as it was at this epoch (equal updates), "
                        "with the factorization diagnostic run on that epoch (`factorization --epoch`)")
    parser.add_argument('--rank', type=int, default=None, help="the factorization diagnostic run with pairwise "
                        "tables of this rank (`factorization --rank`)")
    parser.add_argument('--fit', default='crossfit', choices=('crossfit', 'train'), help="the factorization "
                        "diagnostic fitted this way (`factorization --fit`)")
    parser.add_argument('--dset', default=None, metavar='NAME', help="tokenizers' evaluate columns from their "
                        "evaluation on this dataset preset (`evaluate --dset NAME`), not their history's")
    parser.add_argument('--against', default=None, metavar='SETTING', help="also compare every setting with this "
                        "one (as the table's first column names it, e.g. 'mmd.weight=0.0'): per-seed paired "
                        "differences with a 95%% t interval, and Welch's t-test")
    parser.add_argument('--against-metric', metavar='STAGE/KEY', action='append', default=None,
                        help="the metric --against compares (repeatable; default evaluate/codes_tc_excess)")
    opts = parser.parse_args(argv)
    if opts.against_metric and opts.against is None:
        parser.error("--against-metric needs --against SETTING (the setting to compare with)")
    if opts.epoch is not None and opts.epoch < 1:
        parser.error(f"--epoch must be at least 1, got {opts.epoch}")
    if opts.dset is not None:
        try:
            check_dset(opts.dset)
        except ValueError as exc:
            parser.error(str(exc))
    from .train import XPNotFound
    try:
        xps = resolve_targets(opts.targets, scale=opts.scale)
    except XPNotFound as exc:
        parser.error(str(exc))
    lms = [xp for xp in xps if is_lm(xp.cfg)]
    tokenizers = [xp for xp in xps if not is_lm(xp.cfg)]
    groups: tp.Dict[str, tp.List[tp.Dict[str, tp.Any]]] = OrderedDict()
    for kind in (tokenizers, lms):
        if not kind:
            continue
        if groups:
            print()
        columns = columns_for(kind)
        kind_groups = collect(kind, columns, epoch=opts.epoch, rank=opts.rank,
                              dset=opts.dset if kind is tokenizers else None, fit=opts.fit)
        print(markdown_table(kind_groups, columns=columns))
        if opts.per_xp:
            print()
            print(markdown_table(kind_groups, per_xp=True, columns=columns))
        groups.update(kind_groups)
    for metric in opts.per_epoch:
        print()
        print(epoch_table(groups, metric))
    if opts.against is not None:
        for metric in opts.against_metric or ['evaluate/codes_tc_excess']:
            print()
            try:
                print(against_table(groups, opts.against, metric))
            except ValueError as exc:
                parser.error(str(exc))
    if opts.out is not None:
        for path in plot(groups, opts.out):
            print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
