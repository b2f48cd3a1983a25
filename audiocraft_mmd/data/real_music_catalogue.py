"""The catalogue of the real-music preset: the pinned Debian game-soundtrack packages it is built from, as data.

One `Package` entry per package: where the archive has it (name, exact version, sha256 and size as `apt-get
download --print-uris` prints them, pool path), how its music is found and described (globs, game, style, moods),
its rights as its copyright file states them, what the builder measured on it (hours, tracks), and the few facts
that keep tracks sharing material in one split. `python -m audiocraft_mmd.data.real_music --list` prints it; the
builder (`real_music`) reads it, and `debian` fetches and extracts the files it pins.
"""
import dataclasses
import typing as tp

from . import debian


@dataclasses.dataclass(frozen=True)
class Package:
    """One pinned Debian package and what the builder says about its tracks.

    The archive fields come from `apt-get download --print-uris NAME=VERSION` / `apt-cache show` (Debian 12);
    holders and licenses from the package's `usr/share/doc/NAME/copyright`; hours and tracks were measured on the
    built data. Style, moods and instrument describe the whole soundtrack (the game's genre and a measured
    percussive share), not each track.
    """
    name: str
    version: str
    sha256: str
    size: int
    pool_path: str                      # the file's path in the archive ("Filename:" of apt-cache show)
    game: str
    short: str                          # prefix of the track ids (file names)
    style: str                          # MusicInfo.genre
    moods: tp.Tuple[str, ...]
    instrument: str
    keywords: tp.Tuple[str, ...]
    music: tp.Tuple[str, ...]           # globs of the music files (paths in the package; zip members below it)
    holders: str                        # package-level copyright holders, as the copyright file states them
    licenses: tp.Tuple[str, ...]        # every license a track may carry (the first: the non-DEP-5 default)
    hours: float                        # measured: music kept by the builder
    tracks: int
    whole: bool = False                 # tracks share themes: the whole soundtrack stays in one split (train)
    same_theme: tp.Tuple[tp.Tuple[str, ...], ...] = ()   # lower-case stems sharing material: one split
    theme_pattern: tp.Optional[str] = None   # regex on the lower-case stem; group(1) is the theme key
    rights: tp.Tuple[tp.Tuple[str, str, str], ...] = ()  # (glob, holders, license): not in the copyright file
    title_strip: tp.Optional[str] = None     # regex removed from the stem before it becomes the title
    note: str = ''

    @property
    def deb_file(self) -> str:
        """The file name `apt-get download` writes."""
        return debian.deb_file_name(self.name, self.version)

    @property
    def url(self) -> str:
        """Where the archive serves the file."""
        return debian.pool_url(self.pool_path)



PACKAGES: tp.Dict[str, Package] = {p.name: p for p in [
    Package(
        name='wesnoth-1.16-music', version='1:1.16.9-1',
        sha256='f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb', size=153244368,
        pool_path='pool/main/w/wesnoth-1.16/wesnoth-1.16-music_1.16.9-1_all.deb',
        game='The Battle for Wesnoth', short='wesnoth', style='orchestral', moods=('epic', 'heroic', 'solemn'),
        instrument='orchestra', keywords=('fantasy', 'symphonic', 'game soundtrack'),
        music=('usr/share/games/wesnoth/1.16/data/core/music/*',),
        holders='2003-2009 David White and the Battle for Wesnoth contributors', licenses=('GPL-2+',),
        hours=2.131, tracks=38,
        # defeat2 (a 14 s stinger) plays a passage of traveling_minstrels (measured: shared audio); name variants.
        same_theme=(('defeat', 'defeat2', 'traveling_minstrels'), ('victory', 'victory2'),
                    ('frantic', 'frantic-old')),
        note='silence.ogg (10 s of digital silence) is skipped as silent'),
    Package(
        name='nexuiz-music', version='2.5.2-12',
        sha256='d1a7d6e2c0a5bbe6670dbf73354e38f742597310d425e373250fc71a636f8dda', size=84012080,
        pool_path='pool/main/n/nexuiz-data/nexuiz-music_2.5.2-12_all.deb',
        game='Nexuiz', short='nexuiz', style='electronic', moods=('energetic', 'dark', 'driving'),
        instrument='synthesizers and drum machines', keywords=('techno', 'industrial', 'game soundtrack'),
        music=('usr/share/games/nexuiz/data/music.pk3/sound/cdtracks/*',),
        holders='2002-2009 Alientrap, Lee Vermeulen', licenses=('GPL-2+',), hours=1.401, tracks=18),
    Package(
        name='hyperrogue-music', version='12.0q-1',
        sha256='61ab9f4c2169442d85f42c42d26e80c1a18b93c741f3d44f1b9d83015904e7f7', size=63836788,
        pool_path='pool/main/h/hyperrogue/hyperrogue-music_12.0q-1_all.deb',
        game='HyperRogue', short='hyperrogue', style='ambient', moods=('mysterious', 'calm'),
        instrument='synthesizers', keywords=('atmospheric', 'game soundtrack'),
        music=('usr/share/hyperrogue/music/*',),
        holders='Shawn Parrotte; Lincoln Domina; Will Savino', licenses=('CC-BY-SA-3.0',), hours=0.389,
        tracks=17, title_strip=r'^hr3?-(?:savino-|domina-)?',
        note='usr/share/hyperrogue/sounds/ (84 sound effects) is not music'),
    Package(
        name='drascula-music', version='1.0+ds4-2',
        sha256='340e0beb1bacf005cbabebc07ebdd88adf6aee363d437f8a7d73cb0c77a93e79', size=36429732,
        pool_path='pool/main/d/drascula/drascula-music_1.0+ds4-2_all.deb',
        game='Drascula: The Vampire Strikes Back', short='drascula', style='adventure game score',
        moods=('spooky', 'comic'), instrument='synthesizers', keywords=('point and click', 'game soundtrack'),
        music=('usr/share/scummvm/drascula/audio/*',),
        holders='1996-2008 Alcachofa Soft S.L.', licenses=('Drascula-License',), hours=0.776, tracks=29,
        # One game's score by one studio; track30 replays track1 (measured: shared audio).
        whole=True,
        note='the de/en/es/fr/it folders are links to the same 31 files; 2 tracks are under 10 s'),
    Package(
        name='asc-music', version='1.3-6',
        sha256='369f2d396adb8db9003ef73b797d529e284a7764a5ff4b59a50a4c8b9294da5f', size=10317876,
        pool_path='pool/main/a/asc-music/asc-music_1.3-6_all.deb',
        game='Advanced Strategic Command', short='asc', style='electronic', moods=('driving', 'martial'),
        instrument='synthesizers and drums', keywords=('strategy', 'game soundtrack'),
        music=('usr/share/games/asc/music/*',),
        holders='2002 Michael Kievernagel', licenses=('GPL-2+',), hours=0.293, tracks=3,
        note='3 tracks (MP3, 22.05 kHz): alone it cannot fill 4 splits (--allow-empty-splits)'),
    Package(
        name='ufoai-music', version='2.5-2',
        sha256='2465d55e9dce75a3a2a1ad1c8ca67da84e251c04e0965d63a8562b2d9f76f9e6', size=210239176,
        pool_path='pool/main/u/ufoai-music/ufoai-music_2.5-2_all.deb',
        game='UFO: Alien Invasion', short='ufoai', style='cinematic', moods=('tense', 'dark'),
        instrument='orchestra and synthesizers', keywords=('science fiction', 'game soundtrack'),
        music=('usr/share/games/ufoai/base/0music.pk3/music/*',),
        holders='2002-2014 The UFO:AI Team and the composers the copyright file lists per file',
        licenses=('GPL-2+', 'CC-BY-3.0', 'CC-BY-SA-3.0', 'GPL-2', 'public-domain'), hours=4.007, tracks=64,
        # Each composer's numbered series (Battlescape01..06, PsymongN1..5, ...) is kept together.
        theme_pattern=r'^(crystan|david|marine|psymong|van)[-_]?'),
    Package(
        name='warzone2100-music', version='4.3.3-3',
        sha256='d3b2c9f90ea5438d45d4aff18339a03ec808e1affa9dac91f7dad61cb15ee64e', size=85730052,
        pool_path='pool/main/w/warzone2100/warzone2100-music_4.3.3-3_all.deb',
        game='Warzone 2100', short='warzone2100', style='electronic', moods=('tense', 'brooding'),
        instrument='synthesizers', keywords=('ambient techno', 'game soundtrack'),
        music=('usr/share/games/warzone2100/music/*',),
        holders='1999-2004 Eidos Interactive, 2005-2013 Warzone 2100 Project; 2019-2022 LupusMechanicus',
        licenses=('GPL-2+', 'CC-BY-SA-3.0+ or GPL-2+'), hours=4.053, tracks=30,
        # The albums' own license.txt (not Debian's copyright file) names their composer and dual license.
        rights=(
            ('*/albums/original_soundtrack/*',
             '1999-2004 Eidos Interactive, 2005-2013 Warzone 2100 Project (music: Martin Severn)', 'GPL-2+'),
            ('*/albums/legacy_soundtrack/*', '2019-2022 LupusMechanicus', 'CC-BY-SA-3.0+ or GPL-2+'),
            ('*/albums/aftermath_soundtrack/*', '2021-2022 LupusMechanicus', 'CC-BY-SA-3.0+ or GPL-2+'),
            ('*/albums/aftermath_soundtrack/track3_enhanced.opus',
             "LupusMechanicus, derived from Martin Severn's Track 3", 'GPL-2+'),
        ),
        note='tracks of 5-14 min'),
    Package(
        name='planetblupi-music-ogg', version='1.14.2-3',
        sha256='7d89a6d00b43cdb601e35256ab1a62814d203b5922cfed6a0e73e98486e82fa6', size=60112692,
        pool_path='pool/main/p/planetblupi/planetblupi-music-ogg_1.14.2-3_all.deb',
        game='Planet Blupi', short='planetblupi', style='light instrumental', moods=('cheerful', 'playful'),
        instrument='synthesizers', keywords=('family game', 'game soundtrack'),
        music=('usr/share/planetblupi/music/*',),
        holders='2017-2018 Mathieu Schroeter; 1997 Daniel Roux, EPSITEC SA & Denis Dumoulin',
        licenses=('GPL-3+',), hours=2.715, tracks=10,
        note='each file loops one piece for 10-29 min (music000: a 152 s loop played 11 times)'),
]}
DEFAULT_PACKAGES = ('wesnoth-1.16-music', 'nexuiz-music', 'hyperrogue-music', 'drascula-music', 'asc-music')
