"""Offline "real music" dataset: music21's bundled scores rendered to audio with a GM SoundFont.

Everything needed ships inside pip wheels, so the dataset can be (re)built on a machine without
internet access:

* scores: the corpus bundled in ``music21`` (371 Bach chorales, string quartet movements by
  Haydn / Mozart / Beethoven / Schumann, Monteverdi madrigals, ...);
* sounds: the General MIDI SoundFont ``TimGM6mb.sf2`` bundled in ``pretty_midi``;
* synthesis: ``tinysoundfont`` (no fluidsynth / ffmpeg needed).

Every piece gets a plausible ensemble (string quartet, woodwind quartet, brass, organ, piano, ...)
drawn from an RNG seeded by ``(seed, piece id)``, so a piece renders identically whatever other
pieces are in the set. Audio is 32 kHz mono, loudness-normalised, written as 16-bit PCM wav with
a MusicGen-style ``.json`` sidecar (``audiocraft.data.music_dataset.MusicInfo`` fields), and
AudioCraft manifests (``egs/<name>/<split>/data.jsonl``) are written next to it.

Usage::

    python -m audiocraft_mmd.data.embedded_music                  # small preset (~1 min build)
    python -m audiocraft_mmd.data.embedded_music --preset large   # >= 5 hours of audio

See ``docs/dataset.md`` for details.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import sys
import time
import typing as tp
import warnings
from pathlib import Path

import numpy as np

# Paths, the build record, normalization, file writing and split names are shared with the real-music builder (one
# place for each).
from . import common
from .common import (PEAK_CEILING_DB, REPO_ROOT, SAMPLE_RATE, SPLIT_FRACTIONS, SPLITS, TARGET_LUFS,  # noqa: F401
                     integrated_loudness, manifest_entry, write_manifest, write_sidecar, write_wav_pcm16)
from .common import loudness_normalize as _loudness_normalize
from .common import stable_hash as _stable_hash

BUILDER_VERSION = 1
DEFAULT_SEED = 1234
LEAD_IN_S = 0.1              # silence before the first note
TAIL_S = 1.5                 # silence / release after the last note-off
# SPLIT_FRACTIONS: fraction of pieces (at least 1 each) held out per split; whole groups are assigned, see
# _assign_splits.
PRESET_NAMES = {'small': 'embedded_music', 'large': 'embedded_music_large'}
MISSING_MESSAGE = "dataset missing: run `python -m audiocraft_mmd.data.embedded_music{args}`"


# --------------------------------------------------------------------------------------------
# Ensembles: General MIDI programs (0-based) for the roles [top, upper-middle, lower-middle, bass].
# --------------------------------------------------------------------------------------------
ENSEMBLES: tp.Dict[str, dict] = {
    'string_quartet': dict(programs=[40, 40, 41, 42], names=['violin', 'violin', 'viola', 'cello'],
                           label='string {size}', family='strings'),
    'string_orchestra': dict(programs=[48, 48, 48, 48], names=['strings'] * 4,
                             label='string orchestra', family='strings'),
    'woodwind_quartet': dict(programs=[73, 68, 71, 70], names=['flute', 'oboe', 'clarinet', 'bassoon'],
                             label='woodwind {size}', family='woodwinds'),
    'saxophone_quartet': dict(programs=[64, 65, 66, 67],
                              names=['soprano saxophone', 'alto saxophone', 'tenor saxophone',
                                     'baritone saxophone'],
                              label='saxophone {size}', family='woodwinds'),
    'brass_choir': dict(programs=[56, 60, 57, 58], names=['trumpet', 'french horn', 'trombone', 'tuba'],
                        label='brass {size}', family='brass'),
    'organ': dict(programs=[19] * 4, names=['pipe organ'] * 4, label='pipe organ', family='keyboard'),
    'piano': dict(programs=[0] * 4, names=['piano'] * 4, label='piano', family='keyboard'),
    'harpsichord': dict(programs=[6] * 4, names=['harpsichord'] * 4, label='harpsichord',
                        family='keyboard'),
    'choir': dict(programs=[52] * 4, names=['choir'] * 4, label='choir', family='voices'),
    'recorder_consort': dict(programs=[74] * 4, names=['recorder'] * 4, label='recorder consort',
                             family='woodwinds'),
}
_SIZE_WORDS = {1: 'solo', 2: 'duo', 3: 'trio', 4: 'quartet', 5: 'quintet', 6: 'sextet',
               7: 'septet', 8: 'octet'}

# --------------------------------------------------------------------------------------------
# Collections of the music21 corpus that are used (all multi-voice).
# --------------------------------------------------------------------------------------------
COMPOSERS = {
    'bach': ('Johann Sebastian Bach', 'Bach', 'baroque'),
    'beethoven': ('Ludwig van Beethoven', 'Beethoven', 'classical'),
    'haydn': ('Joseph Haydn', 'Haydn', 'classical'),
    'mozart': ('Wolfgang Amadeus Mozart', 'Mozart', 'classical'),
    'schumann_robert': ('Robert Schumann', 'Schumann', 'romantic'),
    'monteverdi': ('Claudio Monteverdi', 'Monteverdi', 'renaissance'),
    'corelli': ('Arcangelo Corelli', 'Corelli', 'baroque'),
    'luca': ('D. Luca', 'Luca', 'medieval'),
    'lusitano': ('Vicente Lusitano', 'Lusitano', 'renaissance'),
}
COLLECTIONS: tp.Dict[str, dict] = {
    'chorale': dict(
        form='chorale', keywords=['chorale', 'hymn', 'four-part harmony'],
        ensembles={'string_quartet': 3, 'organ': 3, 'brass_choir': 2, 'woodwind_quartet': 2,
                   'choir': 2, 'string_orchestra': 2, 'piano': 2, 'saxophone_quartet': 1,
                   'harpsichord': 1},
        bpm_range=(60, 92), fermata=True),
    'quartet': dict(
        form='string quartet movement', keywords=['string quartet', 'chamber music'],
        ensembles={'string_quartet': 6, 'string_orchestra': 2, 'woodwind_quartet': 1, 'piano': 1},
        bpm_range=(88, 126), fermata=False),
    'madrigal': dict(
        form='madrigal', keywords=['madrigal', 'polyphony', 'vocal music'],
        ensembles={'choir': 3, 'string_orchestra': 2, 'recorder_consort': 2, 'string_quartet': 2,
                   'organ': 1, 'brass_choir': 1, 'woodwind_quartet': 1},
        bpm_range=(96, 126), fermata=False),
    'other': dict(
        form='polyphonic piece', keywords=['polyphony', 'early music'],
        ensembles={'string_quartet': 2, 'organ': 2, 'harpsichord': 1, 'recorder_consort': 1,
                   'choir': 1},
        bpm_range=(72, 108), fermata=False),
}
OTHER_PIECES = {  # path -> (title, form)
    'corelli/opus3no1/1grave.xml': ('Sonata da chiesa Op. 3 No. 1: Grave', 'trio sonata movement'),
    'luca/gloria.xml': ('Gloria (Q15)', 'mass movement'),
    'lusitano/allor_che_ignuda.mxl': ("Allor che ignuda d'herb et fior la terra", 'madrigal'),
}
# Short non-chorale pieces mixed into the small preset (cheap to parse).
SMALL_EXTRAS = ['mozart/k156/movement4.mxl', 'monteverdi/madrigal.3.15.mxl',
                'haydn/opus1no1/movement3.mxl', 'monteverdi/madrigal.4.9.mxl',
                'corelli/opus3no1/1grave.xml']
SMALL_NUM_CHORALES = 46
_SCORE_EXTS = ('.mxl', '.xml', '.musicxml', '.krn', '.abc', '.mei')


# --------------------------------------------------------------------------------------------
# Paths / status helpers (cheap, no music21 import).
# --------------------------------------------------------------------------------------------
def dataset_name(preset_or_name: str) -> str:
    """'small' / 'large' -> dataset name; dataset names are returned unchanged."""
    return PRESET_NAMES.get(preset_or_name, preset_or_name)


def manifest_dir(name: str = 'embedded_music', root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding ``<split>/data.jsonl`` and the build record (``<root>/egs/<name>``; a preset names its set)."""
    return common.manifest_dir(dataset_name(name), root)


def audio_dir(name: str = 'embedded_music', root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Folder holding ``<split>/<piece>.wav|.json`` (``<root>/dataset/<name>``)."""
    return common.audio_dir(dataset_name(name), root)


def is_built(name: str = 'embedded_music', root: tp.Optional[tp.Union[str, Path]] = None,
             config: tp.Optional[dict] = None) -> bool:
    """True if a complete build exists: its build record, the 4 manifests and every audio file they
    reference. If ``config`` is given, the recorded build config must also match it."""
    return common.is_built(dataset_name(name), root, builder_version=BUILDER_VERSION, config=config)


def missing_message(name: str = 'embedded_music') -> str:
    args = '' if dataset_name(name) == PRESET_NAMES['small'] else ' --preset large'
    return MISSING_MESSAGE.format(args=args)


def require_built(name: str = 'embedded_music', root: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Return the manifest dir, or raise FileNotFoundError with the command to build the dataset."""
    if not is_built(name, root):
        raise FileNotFoundError(f"{missing_message(name)} (expected manifests in {manifest_dir(name, root)})")
    return manifest_dir(name, root)


# --------------------------------------------------------------------------------------------
# Piece selection.
# --------------------------------------------------------------------------------------------
def _corpus_dir() -> Path:
    import music21.corpus
    return Path(music21.corpus.__file__).resolve().parent


def _fixed_order(paths: tp.Iterable[str], salt: str) -> tp.List[str]:
    """A seed-independent pseudo-random order (so --max-pieces picks the same pieces for any seed)."""
    return sorted(paths, key=lambda p: (_stable_hash(f'{salt}:{p}'), p))


def piece_id(path: str) -> str:
    """'bach/bwv153.1.mxl' -> 'bach_bwv153-1' (file-name safe, unique within the corpus)."""
    stem = path
    for ext in _SCORE_EXTS:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return re.sub(r'[^A-Za-z0-9_-]+', '-', stem.replace('/', '_')).strip('-')


def collection_of(path: str) -> str:
    if path.startswith('bach/'):
        return 'chorale'
    if path.startswith('monteverdi/'):
        return 'madrigal'
    if re.match(r'^(beethoven|haydn|mozart|schumann_robert)/[^/]+/movement\d+\.', path):
        return 'quartet'
    return 'other'


def list_chorales() -> tp.List[str]:
    """The 371 Riemenschneider chorales, as corpus paths ('bach/bwv269.mxl'), in catalogue order."""
    from music21.corpus import chorales
    cdir = _corpus_dir()
    out = []
    for name in chorales.Iterator(returnType='filename'):
        for ext in ('.mxl', '.xml'):
            if (cdir / (name + ext)).exists():
                out.append(name + ext)
                break
        else:
            # a few catalogue names are prefixes of the file name ('bwv18.5-l' -> 'bwv18.5-lz.mxl')
            found = sorted(p.name for p in (cdir / 'bach').glob(name.split('/')[-1] + '*.mxl'))
            out.append(f'bach/{found[0]}' if found else name)  # not found: fails and is counted
    return list(dict.fromkeys(out))  # the Riemenschneider numbering lists a few settings twice


def list_quartet_movements() -> tp.List[str]:
    """String quartet movements (one file per movement; the big whole-work files are excluded since
    expanding their repeats takes minutes)."""
    cdir = _corpus_dir()
    out = []
    for composer in ('beethoven', 'haydn', 'mozart', 'schumann_robert'):
        for work in sorted(p for p in (cdir / composer).iterdir() if p.is_dir()):
            for mv in sorted(work.iterdir()):
                if re.fullmatch(r'movement\d+\.mxl', mv.name):
                    out.append(f'{composer}/{work.name}/{mv.name}')
    return out


def list_madrigals() -> tp.List[str]:
    cdir = _corpus_dir()
    return sorted(f'monteverdi/{p.name}' for p in (cdir / 'monteverdi').iterdir()
                  if re.fullmatch(r'madrigal\.\d+\.\d+\.mxl', p.name))


def preset_pieces(preset: str) -> tp.List[str]:
    """Candidate pieces of a preset, in the order in which ``max_pieces`` truncates them."""
    if preset == 'small':
        chorales = _fixed_order(list_chorales(), 'small-chorales')[:SMALL_NUM_CHORALES]
        out: tp.List[str] = []
        extras = list(SMALL_EXTRAS)
        for i, c in enumerate(chorales):
            out.append(c)
            if i % 8 == 7 and extras:   # interleave: the first 8 candidates are all chorales
                out.append(extras.pop(0))
        return out + extras
    if preset == 'large':
        everything = list_chorales() + list_quartet_movements() + list_madrigals() + list(OTHER_PIECES)
        return _fixed_order(dict.fromkeys(everything), 'large')
    raise ValueError(f"unknown preset {preset!r} (expected one of {sorted(PRESET_NAMES)})")


# --------------------------------------------------------------------------------------------
# Rendering one piece (runs in worker processes).
# --------------------------------------------------------------------------------------------
_CHORALE_TITLES: tp.Optional[tp.Dict[str, str]] = None


def _chorale_titles() -> tp.Dict[str, str]:
    global _CHORALE_TITLES
    if _CHORALE_TITLES is None:
        from music21.corpus import chorales
        _CHORALE_TITLES = {str(v['bwv']): v['title']
                           for v in chorales.ChoraleListRKBWV().byRiemenschneider.values()}
    return _CHORALE_TITLES


def soundfont_path() -> Path:
    import pretty_midi
    return Path(pretty_midi.__file__).resolve().parent / 'TimGM6mb.sf2'


def _piece_rng(seed: int, pid: str, purpose: str) -> random.Random:
    return random.Random(_stable_hash(f'{seed}:{pid}:{purpose}'))


def _pretty_opus(work: str) -> str:
    m = re.fullmatch(r'opus(\d+)no(\d+)', work)
    if m:
        return f'Op. {m.group(1)} No. {m.group(2)}'
    m = re.fullmatch(r'k(\d+)', work)
    if m:
        return f'K. {m.group(1)}'
    return work


def _describe_path(path: str) -> dict:
    """Static metadata (title, composer, form, group used for splitting) from the corpus path."""
    coll = collection_of(path)
    composer_key = path.split('/')[0]
    composer, short, period = COMPOSERS.get(composer_key, (composer_key.title(), composer_key.title(), ''))
    form = COLLECTIONS[coll]['form']
    pid = piece_id(path)
    if coll == 'chorale':
        bwv = re.sub(r'\.(mxl|xml)$', '', path.split('/')[-1]).replace('bwv', '')
        tune = _chorale_titles().get(bwv)
        title = f'{tune} (BWV {bwv})' if tune else f'Chorale BWV {bwv}'
        # Settings of the same chorale tune stay in the same split.
        group = 'chorale:' + re.sub(r'[^a-z0-9]+', ' ', (tune or bwv).lower()).strip()
    elif coll == 'quartet':
        _, work, mv = path.split('/')
        num = re.sub(r'\D', '', mv)
        title = f'String Quartet {_pretty_opus(work)}, movement {num}'
        group = f'work:{composer_key}/{work}'   # all movements of a work stay together
    elif coll == 'madrigal':
        book, num = re.findall(r'\d+', path.split('/')[-1])[:2]
        title = f'Madrigal, Book {book} No. {num}'
        group = f'piece:{pid}'
    else:
        title, form = OTHER_PIECES.get(path, (pid, form))
        group = f'piece:{pid}'
    return dict(collection=coll, composer=composer, composer_short=short, period=period,
                title=title, form=form, group=group)


def _resolve_score(path: str) -> Path:
    cdir = _corpus_dir()
    cand = cdir / path
    if cand.is_file():
        return cand
    for ext in _SCORE_EXTS:
        if (cdir / (path + ext)).is_file():
            return cdir / (path + ext)
    raise FileNotFoundError(f'not in the music21 corpus: {path}')


def _tempo_from_score(score) -> tp.Tuple[tp.Optional[float], tp.Optional[str]]:
    """(quarter-note BPM, tempo word) from an explicit metronome mark or a tempo word at the start."""
    from music21 import tempo as m21tempo
    words = sorted(m21tempo.defaultTempoValues, key=len, reverse=True)
    ts = score.recurse().getElementsByClass('TimeSignature').first()
    beat_ql = float(ts.beatDuration.quarterLength) if ts is not None else 1.0
    for el in score.recurse().getElementsByClass(['MetronomeMark', 'TextExpression']):
        try:
            if float(el.getOffsetInHierarchy(score)) > 8.0:
                continue
        except Exception:  # noqa: BLE001 - element without a usable offset
            continue
        if 'MetronomeMark' in el.classes and el.number is not None and not el.numberImplicit:
            return float(el.getQuarterBPM()), el.text
        text = (getattr(el, 'content', None) or getattr(el, 'text', None) or '')
        text = str(text).strip().lower()
        for w in words:
            if re.search(r'\b' + re.escape(w) + r'\b', text):
                return m21tempo.defaultTempoValues[w] * beat_ql, w
    return None, None


def _collect_notes(score, fermata: bool):
    """Note list [(onset_ql, offset_ql, part_index, midi)] with ties merged, and fermata offsets.

    Ties are merged here, per pitch, rather than with music21's ``stripTies(matchByPitch=True)``: measured
    (``python bench/bench_dataset_build.py steps``, CPU time) this loop takes 0.2 s on the small preset's 51
    candidates and 0.2 s on the 3 largest quartet movements, stripTies 3.3 s and 26 s (about +15 % on the
    small build, more than doubling the large one), and stripTies gives other notes on 3 of those 54 pieces
    (a Monteverdi madrigal, two Beethoven movements)."""
    from music21 import chord, expressions, note
    notes = []
    fermata_ends: tp.Set[float] = set()
    for pi, part in enumerate(score.parts):
        open_ties: tp.Dict[int, list] = {}
        for el in part.flatten().notes:
            if not isinstance(el, (note.Note, chord.Chord)):
                continue
            ql = float(el.quarterLength)
            if ql <= 0:  # grace notes
                continue
            on = float(el.offset)
            if fermata and any(isinstance(e, expressions.Fermata) for e in el.expressions):
                fermata_ends.add(on + ql)
            sub = el.notes if isinstance(el, chord.Chord) else [el]
            for n in sub:
                midi = int(n.pitch.midi)
                tie = n.tie if n.tie is not None else getattr(el, 'tie', None)
                ttype = tie.type if tie is not None else None
                if ttype in ('stop', 'continue') and midi in open_ties:
                    open_ties[midi][1] = on + ql
                    if ttype == 'stop':
                        notes.append(tuple(open_ties.pop(midi)))
                    continue
                if midi in open_ties:   # dangling tie: close it
                    notes.append(tuple(open_ties.pop(midi)))
                if ttype == 'start':
                    open_ties[midi] = [on, on + ql, pi, midi]
                else:
                    notes.append((on, on + ql, pi, midi))
        notes.extend(tuple(v) for v in open_ties.values())
    notes = [n for n in notes if 0 <= n[3] <= 127]
    notes.sort()
    return notes, sorted(fermata_ends)


def _render_notes(notes, fermata_ends, n_parts, programs, velocities, spb, fermata_hold_beats,
                  rng: random.Random, sr: int) -> np.ndarray:
    import tinysoundfont  # noqa: F401  (import error surfaces as a render failure)
    # A fresh synth per piece: no state (voices, envelopes) can leak from the previous piece.
    synth = tinysoundfont.Synth(samplerate=sr, gain=0)
    sfid = synth.sfload(str(soundfont_path()))
    channels = [c for c in range(16) if c != 9]   # channel 10 is GM percussion
    for pi in range(n_parts):
        synth.program_select(channels[pi % len(channels)], sfid, 0, programs[pi])
    fends = np.asarray(fermata_ends, dtype=np.float64)
    first = notes[0][0]

    def t_of(q: float) -> float:
        held = float(np.searchsorted(fends, q, side='right')) * fermata_hold_beats if len(fends) else 0.0
        return LEAD_IN_S + (q - first + held) * spb

    events = []
    for on, off, pi, midi in notes:
        t_on, t_off = t_of(on), t_of(off)
        gap = min(0.04, 0.15 * (t_off - t_on))            # short articulation gap (repeated notes)
        vel = int(min(127, max(1, velocities[pi] + rng.randint(-5, 5))))
        ch = channels[pi % len(channels)]
        events.append((int(round((t_off - gap) * sr)), 0, ch, midi, 0))   # note-offs first
        events.append((int(round(t_on * sr)), 1, ch, midi, vel))
    events.sort()
    chunks = []
    cursor = 0
    for sample, kind, ch, midi, vel in events:
        if sample > cursor:
            chunks.append(np.frombuffer(synth.generate(sample - cursor), dtype=np.float32).copy())
            cursor = sample
        if kind:
            synth.noteon(ch, midi, vel)
        else:
            synth.noteoff(ch, midi)
    chunks.append(np.frombuffer(synth.generate(int(TAIL_S * sr)), dtype=np.float32).copy())
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo.mean(axis=1, dtype=np.float32)


def _estimate_key(score) -> tp.Tuple[str, str]:
    """Key of a (repeat-expanded) score -> ('G', 'major'): music21's ``analyze('key')`` (Krumhansl-Schmuckler
    with the Aarden-Essen profiles on the duration-weighted pitch classes), flats written 'b' ('B-' -> 'Bb')."""
    key = score.analyze('key')
    return key.tonic.name.replace('-', 'b'), key.mode


def _expand_repeats(score):
    """Repeat-expanded parts (a Score): music21's own ``repeat.Expander``, part by part, without the deep copy
    and spanner relinking of ``Score.expandRepeats()`` (the parsed score is discarded afterwards, so expanding
    in place is fine). Raises music21's ExpanderException on repeat marks it cannot expand.

    Measured (``python bench/bench_dataset_build.py steps``, CPU time, two runs): ``Score.expandRepeats()``
    gives the same notes on all 54 pieces tried but takes 5.8-6.1 s instead of 2.4-2.8 s on the small preset's
    51 candidates (whose build takes about 22 s of CPU) and 8.5-8.6 s instead of 2.6-3.1 s on the 3 largest
    quartet movements of the large preset (whose build is dominated by quartets): a build 10-30 % slower for
    the same notes, so the library's Expander is called directly."""
    from music21 import repeat, stream
    out = stream.Score()
    for part in score.parts:
        if not part.hasMeasures():
            raise ValueError('part without measures')
        out.insert(0, repeat.Expander(part).process(deepcopy=False))
    return out


def _tempo_word(bpm: float) -> str:
    if bpm < 66:
        return 'slow'
    if bpm < 100:
        return 'moderate'
    if bpm < 132:
        return 'lively'
    return 'fast'


def _moods(mode: str, tempo_word: str, coll: str, rng: random.Random) -> tp.List[str]:
    pool = {
        ('major', 'slow'): ['peaceful', 'serene', 'warm', 'reverent'],
        ('major', 'moderate'): ['warm', 'uplifting', 'dignified', 'hopeful'],
        ('major', 'lively'): ['joyful', 'bright', 'playful', 'energetic'],
        ('major', 'fast'): ['energetic', 'joyful', 'exuberant', 'bright'],
        ('minor', 'slow'): ['melancholic', 'solemn', 'mournful', 'introspective'],
        ('minor', 'moderate'): ['solemn', 'melancholic', 'serious', 'yearning'],
        ('minor', 'lively'): ['dramatic', 'restless', 'urgent', 'intense'],
        ('minor', 'fast'): ['dramatic', 'agitated', 'intense', 'urgent'],
    }[('minor' if mode == 'minor' else 'major', tempo_word)]
    moods = rng.sample(pool, 2)
    if coll == 'chorale':
        moods.append('devotional')
    return moods


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    return ('an ' if word[:1].lower() in 'aeiou' else 'a ') + word


def _ensemble_label(ens: str, n_parts: int) -> str:
    label = ENSEMBLES[ens]['label']
    return label.format(size=_SIZE_WORDS.get(n_parts, 'ensemble'))


def _description(info: dict, rng: random.Random) -> str:
    form, ens, key, n = info['form'], info['instrument'], info['key'], info['num_voices']
    short, composer, tempo_word = info['composer_short'], info['artist'], info['tempo_word']
    mood = info['moods'][0]
    templates = [
        lambda: f"{_cap(_a(short + ' ' + form))} for {ens} in {key}, {n} voices, {tempo_word} tempo.",
        lambda: f"{_cap(form)} by {composer} played by {_a(ens)}, {key}, {tempo_word} tempo, {mood} mood.",
        lambda: f"{_cap(_a(mood + ' ' + info['period'] + ' ' + form))} in {key} performed by {_a(ens)}, "
                f"around {int(round(info['bpm']))} bpm.",
        lambda: f"{_cap(_a(ens))} performing {info['title']}, {_a(short + ' ' + form)} in {key} "
                f"with {n} voices.",
    ]
    text = rng.choice(templates)()
    return re.sub(r'\s+', ' ', text).replace(' ,', ',')


def render_piece(path: str, seed: int, sample_rate: int = SAMPLE_RATE) -> tp.Tuple[np.ndarray, dict]:
    """Render one corpus piece. Returns (float32 mono waveform, metadata dict). Raises on failure."""
    from music21 import converter
    pid = piece_id(path)
    static = _describe_path(path)
    coll = static['collection']
    cfg = COLLECTIONS[coll]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        score = converter.parse(str(_resolve_score(path)), forceSource=True)
        if not hasattr(score, 'parts') or len(score.parts) == 0:
            raise ValueError(f'not a multi-part score ({type(score).__name__})')
        expanded = _expand_repeats(score)
        notes, fermata_ends = _collect_notes(expanded, cfg['fermata'])
        if not notes:
            raise ValueError('no notes')
        n_parts = len(expanded.parts)
        tonic, mode = _estimate_key(expanded)
        q_bpm, tempo_text = _tempo_from_score(score)

    rng = _piece_rng(seed, pid, 'render')
    names = list(cfg['ensembles'])
    ens = rng.choices(names, weights=[cfg['ensembles'][e] for e in names])[0]
    spec = ENSEMBLES[ens]
    roles = [0 if i == 0 else 3 if i == n_parts - 1 else (1 if i / (n_parts - 1) < 0.5 else 2)
             for i in range(n_parts)]
    programs = [spec['programs'][r] for r in roles]
    instruments = [spec['names'][r] for r in roles]
    vel_ranges = {0: (86, 100), 1: (70, 84), 2: (70, 84), 3: (78, 92)}   # melody louder, inner voices softer
    base_vel = [rng.randint(*vel_ranges[r]) for r in roles]
    if q_bpm is None:
        q_bpm = rng.uniform(*cfg['bpm_range'])
    q_bpm = min(220.0, max(44.0, q_bpm * rng.uniform(0.95, 1.05)))
    ts = score.recurse().getElementsByClass('TimeSignature').first()
    beat_ql = float(ts.beatDuration.quarterLength) if ts is not None else 1.0
    bpm = round(q_bpm / beat_ql, 1)
    fermata_hold = rng.uniform(0.75, 1.5) if cfg['fermata'] else 0.0
    wav = _render_notes(notes, fermata_ends, n_parts, programs, base_vel, 60.0 / q_bpm, fermata_hold,
                        rng, sample_rate)
    wav, lufs, gain_db = _loudness_normalize(wav, sample_rate)

    tempo_word = _tempo_word(bpm)
    text_rng = _piece_rng(seed, pid, 'text')
    moods = _moods(mode, tempo_word, coll, text_rng)
    label = _ensemble_label(ens, n_parts)
    info = dict(
        title=static['title'], artist=static['composer'], key=f'{tonic} {mode}', bpm=bpm, genre='classical',
        moods=moods, keywords=None, description=None, name=pid, instrument=label,
        # extra fields (ignored by MusicInfo.from_dict, useful for analysis)
        composer_short=static['composer_short'], period=static['period'], form=static['form'],
        collection=coll, group=static['group'], source=f'music21 corpus: {path}',
        ensemble=ens, instruments=instruments, gm_programs=programs, num_voices=n_parts,
        tempo_word=tempo_word, tempo_marking=tempo_text, quarter_bpm=round(q_bpm, 2),
        loudness_lufs=round(lufs, 2), gain_db=round(gain_db, 2), seed=seed,
    )
    kw = [static['composer_short'].lower(), static['period'], ens.replace('_', ' '), spec['family']]
    info['keywords'] = list(dict.fromkeys(cfg['keywords'][:2] + kw + instruments))
    info['description'] = _description(info, text_rng)
    return wav.astype(np.float32), info


def _worker(task: dict) -> dict:
    """Render one piece into the staging folder; never raises (failures are reported)."""
    t0 = time.time()
    path, seed, staging = task['path'], task['seed'], Path(task['staging'])
    pid = piece_id(path)
    try:
        wav, info = render_piece(path, seed, task['sample_rate'])
        frames, amplitude = write_wav_pcm16(staging / f'{pid}.wav', wav, task['sample_rate'])
        return dict(ok=True, path=path, piece=pid, info=info, frames=frames, amplitude=amplitude,
                    seconds=time.time() - t0)
    except Exception as exc:  # noqa: BLE001 - any failure of a piece is counted, never fatal
        msg = f'{type(exc).__name__}: {exc}'.replace('\n', ' ')
        return dict(ok=False, path=path, piece=pid, reason=msg[:300], seconds=time.time() - t0)


# --------------------------------------------------------------------------------------------
# Building the dataset.
# --------------------------------------------------------------------------------------------
def _assign_splits(results: tp.List[dict], seed: int) -> tp.Dict[str, str]:
    """piece -> split. Whole groups (chorale tune / quartet work / piece) are assigned so no music is
    shared across splits; see the stratified order below. Deterministic given the seed."""
    groups: tp.Dict[str, tp.List[str]] = {}
    for r in results:
        groups.setdefault(r['info']['group'], []).append(r['piece'])
    if len(groups) < len(SPLITS):
        raise RuntimeError(f'need at least {len(SPLITS)} distinct pieces (groups) to make 4 splits, '
                           f'got {len(groups)} rendered successfully')
    # Stratified order: groups are ranked (by a seed-dependent hash) within their collection
    # (chorales, quartets, madrigals, others) and interleaved by relative rank, so each held-out
    # split gets roughly its fraction of every collection.
    coll_of = {r['info']['group']: r['info'].get('collection', '') for r in results}
    by_coll: tp.Dict[str, tp.List[str]] = {}
    for g in groups:
        by_coll.setdefault(coll_of[g], []).append(g)
    sort_key: tp.Dict[str, tuple] = {}
    for coll_groups in by_coll.values():
        coll_groups.sort(key=lambda g: (_stable_hash(f'{seed}:split:{g}'), g))
        for rank, g in enumerate(coll_groups):
            sort_key[g] = ((rank + 0.5) / len(coll_groups), _stable_hash(f'{seed}:split:{g}'), g)
    order = sorted(groups, key=lambda g: sort_key[g])
    n = len(results)
    targets = {s: max(1, round(f * n)) for s, f in SPLIT_FRACTIONS.items()}
    held_out = ('evaluate', 'valid', 'generate')
    assignment: tp.Dict[str, str] = {}
    counts = {s: 0 for s in SPLITS}
    for i, g in enumerate(order):
        if i < len(held_out):
            split = held_out[i]                    # every held-out split gets at least one group
        elif i == len(order) - 1 and counts['train'] == 0:
            split = 'train'                        # ... and train at least one
        else:
            split = next((s for s in held_out if counts[s] < targets[s]), 'train')
        for p in groups[g]:
            assignment[p] = split
        counts[split] += len(groups[g])
    return assignment


def _config(preset: str, seed: int, max_pieces: tp.Optional[int], pieces: tp.Optional[tp.List[str]]) -> dict:
    return dict(preset=preset, seed=int(seed), max_pieces=max_pieces,
                pieces=list(pieces) if pieces is not None else None,
                sample_rate=SAMPLE_RATE, target_lufs=TARGET_LUFS)


def _versions() -> dict:
    out = {}
    for mod in ('music21', 'pretty_midi', 'tinysoundfont', 'pyloudnorm', 'soundfile', 'scipy', 'numpy'):
        try:
            from importlib.metadata import version
            out[mod] = version(mod)
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def _print_summary(s: dict) -> None:
    print(f"[embedded_music] dataset '{s['name']}' (preset={s['preset']}, seed={s['seed']})")
    print(f"  audio:     {s['audio_dir']}")
    print(f"  manifests: {s['manifest_dir']}")
    for split in SPLITS:
        d = s['splits'][split]
        print(f"  {split:<9} {d['pieces']:>4} pieces  {d['hours']:.3f} h")
    print(f"  total     {s['total_pieces']:>4} pieces  {s['total_hours']:.3f} h")
    print(f"  failed:   {s['num_failed']}" + (': ' + ', '.join(f['piece'] for f in s['failed'])
                                               if s['failed'] else ''))
    for f in s['failed']:
        print(f"    - {f['piece']}: {f['reason'][:160]}")
    print(f"  build time: {s['elapsed_s']:.1f} s" + (' (already built, nothing to do)'
                                                     if s.get('already_built') else ''))


def build(preset: str = 'small', seed: int = DEFAULT_SEED, out: tp.Optional[tp.Union[str, Path]] = None,
          max_pieces: tp.Optional[int] = None, workers: tp.Optional[int] = None, force: bool = False,
          pieces: tp.Optional[tp.Sequence[str]] = None, name: tp.Optional[str] = None,
          verbose: bool = True) -> dict:
    """Build (or reuse) the dataset and return a summary dict.

    Args:
        preset: 'small' (~1 h of audio, about a minute to build) or 'large' (>= 5 h).
        seed: controls instrumentation, tempo, velocities, descriptions and the split assignment.
        out: root folder; audio goes to ``<out>/dataset/<name>/<split>/`` and manifests to
            ``<out>/egs/<name>/<split>/data.jsonl``. Default: the repository root.
        max_pieces: only use the first N candidate pieces of the preset (fixed, seed-independent order).
        workers: processes used for rendering (default: number of CPUs); <= 1 renders in-process.
        force: rebuild even if a build with the same config exists.
        pieces: explicit corpus paths (e.g. 'bach/bwv269.mxl') instead of the preset's list.
        name: dataset name (default: 'embedded_music' / 'embedded_music_large' from the preset).
    """
    t0 = time.time()
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r} (expected one of {sorted(PRESET_NAMES)})")
    name = name or PRESET_NAMES[preset]
    root = common.dataset_root(out)
    cfg = _config(preset, seed, max_pieces, list(pieces) if pieces is not None else None)
    mdir, adir = manifest_dir(name, root), audio_dir(name, root)
    if not force and is_built(name, root, config=cfg):
        summary = dict(common.read_record(name, root)['summary'])
        summary.update(already_built=True, elapsed_s=time.time() - t0)
        if verbose:
            _print_summary(summary)
        return summary

    candidates = list(pieces) if pieces is not None else preset_pieces(preset)
    candidates = list(dict.fromkeys(candidates))
    if max_pieces is not None:
        candidates = candidates[:max_pieces]
    # Start from a clean slate: only this dataset's two folders are removed.
    for d in (mdir, adir):
        if d.exists():
            shutil.rmtree(d)
    staging = adir / '.staging'
    staging.mkdir(parents=True)
    # Big files first so that the slowest pieces do not end up alone at the end.
    cdir = _corpus_dir()

    def _size(p: str) -> int:
        try:
            return (cdir / p).stat().st_size
        except OSError:
            return 0
    tasks = [dict(path=p, seed=int(seed), staging=str(staging), sample_rate=SAMPLE_RATE)
             for p in sorted(candidates, key=lambda p: (-_size(p), p))]
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(tasks)))
    if verbose:
        print(f"[embedded_music] rendering {len(tasks)} pieces with {n_workers} worker(s) -> {adir}",
              flush=True)
    results: tp.List[dict] = []

    def _progress(r: dict) -> None:
        results.append(r)
        if verbose and (not r['ok'] or len(results) % 25 == 0 or len(results) == len(tasks)):
            status = 'ok' if r['ok'] else 'FAILED ' + r['reason'][:100]
            print(f"  [{len(results)}/{len(tasks)}] {r['piece']}: {status} ({time.time() - t0:.0f} s)",
                  flush=True)
    if n_workers == 1:
        for task in tasks:
            _progress(_worker(task))
    else:
        ctx = multiprocessing.get_context('spawn')  # safe even if the parent imported torch
        with ctx.Pool(n_workers, maxtasksperchild=100) as pool:
            for r in pool.imap_unordered(_worker, tasks, chunksize=1):
                _progress(r)
    results.sort(key=lambda r: r['piece'])
    ok = [r for r in results if r['ok']]
    failed = [dict(piece=r['piece'], path=r['path'], reason=r['reason']) for r in results if not r['ok']]
    assignment = _assign_splits(ok, seed)

    split_meta: tp.Dict[str, tp.List[dict]] = {s: [] for s in SPLITS}
    for r in ok:
        split = assignment[r['piece']]
        sdir = adir / split
        sdir.mkdir(parents=True, exist_ok=True)
        wav_path = sdir / f"{r['piece']}.wav"
        os.replace(staging / f"{r['piece']}.wav", wav_path)
        duration = r['frames'] / SAMPLE_RATE
        sidecar = dict(r['info'])
        sidecar.update(duration=duration, sample_rate=SAMPLE_RATE, file_extension='wav', split=split)
        write_sidecar(wav_path, sidecar)
        # Same key order / serialisation as audiocraft.data.audio_dataset.save_audio_meta.
        split_meta[split].append(manifest_entry(wav_path, duration, SAMPLE_RATE, r['amplitude']))
    shutil.rmtree(staging, ignore_errors=True)
    for split in SPLITS:
        write_manifest(mdir / split / 'data.jsonl', split_meta[split])

    splits = {s: dict(pieces=len(split_meta[s]),
                      hours=round(sum(m['duration'] for m in split_meta[s]) / 3600, 4),
                      pieces_list=[Path(m['path']).stem for m in split_meta[s]]) for s in SPLITS}
    summary = dict(
        name=name, preset=preset, seed=int(seed), max_pieces=max_pieces,
        audio_dir=str(adir), manifest_dir=str(mdir),
        splits=splits, total_pieces=len(ok),
        total_hours=round(sum(d['hours'] for d in splits.values()), 4),
        num_failed=len(failed), failed=failed, elapsed_s=round(time.time() - t0, 1),
        workers=n_workers, already_built=False,
    )
    common.write_record(mdir, dict(builder_version=BUILDER_VERSION, config=cfg, versions=_versions(), summary=summary,
                                   rebuild=rebuild_command(preset, seed, max_pieces, root, pieces, name)))
    if verbose:
        _print_summary(summary)
    return summary


def rebuild_command(preset: str, seed: int, max_pieces: tp.Optional[int], root: Path,
                    pieces: tp.Optional[tp.Sequence[str]], name: str) -> tp.Optional[str]:
    """The command line that builds this dataset again (`--force`: from scratch), for its build record.

    Returns:
        The command, or None for a build the command line cannot make (an explicit piece list, another name).
    """
    if pieces is not None or name != PRESET_NAMES[preset]:
        return None
    args = []
    if preset != 'small':
        args += ['--preset', preset]
    if int(seed) != DEFAULT_SEED:
        args += ['--seed', str(int(seed))]
    if max_pieces is not None:
        args += ['--max-pieces', str(max_pieces)]
    if Path(root).resolve() != REPO_ROOT.resolve():
        args += ['--out', str(root)]
    return common.command('audiocraft_mmd.data.embedded_music', args + ['--force'])


def _check(paths: tp.List[str], preset: str, out: tp.Optional[str], full: bool) -> int:
    """`--check`: the preset's manifests (or `paths`), every file opened; prints each bad file and its fix."""
    from . import check
    name = PRESET_NAMES[preset]
    if not paths:
        mdir = manifest_dir(name, out)
        if not all((mdir / split / 'data.jsonl').exists() for split in SPLITS):
            print(missing_message(name) + (f' --out {out}' if out is not None else ''))
            return 1
        paths = [str(mdir)]
    try:
        total, bad = check.check_manifests(paths, full=full)
    except FileNotFoundError as exc:
        print(exc)
        return 1
    where = ', '.join(paths)
    if bad:
        print(f'{where}: {check.report(bad)}')
        return 1
    how = 'full decode' if full else 'headers checked'
    print(f"{where}: {total} audio files open at the sample rate and duration their manifests say ({how})")
    return 0


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m audiocraft_mmd.data.embedded_music',
        description='Render music21 corpus scores (Bach chorales, string quartets, madrigals) to a '
                    '32 kHz mono AudioCraft/MusicGen dataset with a GM SoundFont.')
    parser.add_argument('--preset', choices=sorted(PRESET_NAMES), default='small',
                        help='small: ~1 h of audio, ~1 min build (default); large: >= 5 h of audio')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                        help=f'instrumentation / tempo / split seed (default {DEFAULT_SEED})')
    parser.add_argument('--max-pieces', type=int, default=None, help='only the first N candidate pieces')
    parser.add_argument('--out', default=None,
                        help='root folder for dataset/<name>/ and egs/<name>/ (default: the repo root)')
    parser.add_argument('--workers', type=int, default=None, help='worker processes (default: #CPUs)')
    parser.add_argument('--force', action='store_true', help='rebuild even if an identical build exists')
    parser.add_argument('--check', nargs='*', metavar='MANIFEST_DIR', default=None,
                        help='build nothing: check that the dataset is built and that every audio file its '
                             'manifests list opens, at the sample rate and duration they say (or check the '
                             'given manifests / egs folders instead); lists each bad file and its fix; exit '
                             'code 0 if all is well, 1 if not')
    parser.add_argument('--full', action='store_true',
                        help='with --check: decode every file to its end, not only its header')
    args = parser.parse_args(argv)
    if args.check is not None:
        return _check(args.check, args.preset, args.out, args.full)
    build(preset=args.preset, seed=args.seed, out=args.out, max_pieces=args.max_pieces,
          workers=args.workers, force=args.force)
    return 0


if __name__ == '__main__':
    sys.exit(main())
