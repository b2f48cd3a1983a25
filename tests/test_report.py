"""`audiocraft_mmd.report` helpers that need no XP (the tables and plots are tested end to end in the integration
tests)."""
from audiocraft_mmd.report import distinct_parts


def test_legend_labels_keep_only_what_differs_between_settings():
    settings = ['optim.epochs=60 tokenizer[mmd.weight=0.0] codebooks_pattern.modeling="delay"',
                'optim.epochs=60 tokenizer[mmd.weight=3.0 mmd.warmup.guard=0.1] codebooks_pattern.modeling="delay"']
    assert distinct_parts(settings) == {settings[0]: 'tokenizer[mmd.weight=0.0]',
                                        settings[1]: 'tokenizer[mmd.weight=3.0 mmd.warmup.guard=0.1]'}
    assert distinct_parts(['seed=1 a']) == {'seed=1 a': 'seed=1 a'}  # one setting: nothing to drop
    assert distinct_parts(['a b', 'a b c']) == {'a b': 'a b', 'a b c': 'c'}  # nothing left: the whole setting


def test_term_plot_gives_a_setting_one_colour_in_every_seed_panel(tmp_path):
    # seed 2025's panel lacks the first setting: its second setting must keep the colour it has in seed 2024's panel
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from omegaconf import OmegaConf
    from audiocraft_mmd import report

    def row(seed: int, weight: float, sig: str) -> dict:
        history = [{'valid': {'codes_tc_excess': 0.3 - 0.01 * e, 'mmd': 1e-3 * (e + 1)}} for e in range(3)]
        return {'cfg': OmegaConf.create({'seed': seed, 'mmd': {'weight': weight}}), 'history': history, 'sig': sig}

    groups = {'mmd.weight=1.0': [row(2024, 1., 'aaaa0001')],
              'mmd.weight=1.0 mmd.warmup.guard=0.1': [row(2024, 1., 'aaaa0002'), row(2025, 1., 'aaaa0003')]}
    figures = []

    class KeepOpen:  # pyplot, except that the figure stays readable after the plot function closes it
        def __getattr__(self, name):
            return getattr(plt, name)

        def close(self, fig):
            figures.append(fig)

    assert report._plot_term_against_dependence(groups, tmp_path, KeepOpen()) == tmp_path / 'term_vs_tc.png'
    panels = figures[0].axes[:2]
    colours = [{line.get_label().split(' (')[-1].rstrip(')'): line.get_color() for line in ax.get_lines()}
               for ax in panels]
    assert set(colours[1]) == {'aaaa0003'}
    assert colours[1]['aaaa0003'] == colours[0]['aaaa0002'] != colours[0]['aaaa0001']


def test_epoch_table_names_its_metric_and_shows_negated_keys_flipped_back():
    from omegaconf import OmegaConf
    from audiocraft_mmd.report import epoch_table

    def row(seed: int, sig: str, epochs: int) -> dict:
        # evaluate's sisnr is logged negated (it is AudioCraft's loss); the table shows dB
        history = [{'train': {}, 'evaluate': {'sisnr': -(1. + e)}} for e in range(epochs)]
        return {'cfg': OmegaConf.create({'seed': seed}), 'history': history, 'sig': sig, 'epochs': epochs}

    table = epoch_table({'w=0': [row(2024, 'aaaa0001', 3), row(2025, 'aaaa0002', 2)]}, 'evaluate/sisnr')
    lines = table.split('\n')
    assert lines[0] == '`evaluate/sisnr` per epoch:'
    assert lines[2] == '| setting | XP, seed | 1 | 2 | 3 |'
    assert lines[4] == '| `w=0` | aaaa0001, 2024 | 1.00 | 2.00 | 3.00 |'
    assert lines[5] == '| `w=0` | aaaa0002, 2025 | 1.00 | 2.00 |  |'  # a shorter run leaves its cells empty


def test_plot_writes_one_mi_heatmap_per_xp(tmp_path):
    from omegaconf import OmegaConf
    from audiocraft_mmd.report import plot

    def row(seed: int, sig: str) -> dict:
        return {'cfg': OmegaConf.create({'seed': seed}), 'history': [], 'sig': sig,
                'mi': {(1, 2): 0.1, (1, 3): 0.05, (2, 3): 0.2}}

    groups = {'a': [row(2024, 'aaaa0001'), row(2025, 'aaaa0002')], 'b': [row(2024, 'aaaa0003')]}
    written = plot(groups, tmp_path)
    assert sorted(p.name for p in written) == ['mi_aaaa0001.png', 'mi_aaaa0002.png', 'mi_aaaa0003.png']
    assert all(p.stat().st_size > 0 for p in written)


def test_against_table_pairs_by_seed_and_states_interval_and_welch():
    import pytest
    from omegaconf import OmegaConf
    from audiocraft_mmd.report import against_table

    def row(seed: int, value: float) -> dict:
        return {'cfg': OmegaConf.create({'seed': seed}), 'evaluate/codes_tc_excess': value}

    groups = {'w=0': [row(2024, 0.30), row(2025, 0.20), row(2026, 0.25)],
              'w=100': [row(2024, 0.20), row(2025, 0.15)],
              'w=300': [row(2025, 0.10)]}
    lines = against_table(groups, 'w=0', 'evaluate/codes_tc_excess').split('\n')
    assert lines[0] == '`evaluate/codes_tc_excess` against `w=0` (3 XPs):'
    # by hand: differences -0.10 and -0.05, mean -0.075, std 0.0354, t(0.975, df 1) = 12.706, half-width 0.318;
    # Welch: means 0.175 and 0.25, variances 0.00125 and 0.0025, t = -0.075 / sqrt(0.00125/2 + 0.0025/3) = -1.96,
    # Welch-Satterthwaite df 2.88, two-sided p 0.148 (t distribution at df 2.88)
    assert lines[4] == '| `w=100` | 2024, 2025 | 0.175 | 0.250 | -0.075 (-0.393 to +0.243) | -1.96 (2.9), 0.148 |'
    # one pair: a difference without an interval; one XP: no Welch test
    assert lines[5] == '| `w=300` | 2025 | 0.100 | 0.250 | -0.100 (one pair: no interval) | n/a |'
    with pytest.raises(ValueError, match="settings are: 'w=0', 'w=100', 'w=300'"):
        against_table(groups, 'w=1', 'evaluate/codes_tc_excess')
    with pytest.raises(ValueError, match="choose one of: evaluate/codes_tc_excess"):
        against_table(groups, 'w=0', 'evaluate/sisnr')
