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
