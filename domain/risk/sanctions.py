"""Sanctions screening of a counterparty name against a list in the OFAC SDN CSV layout.

Input files (no header row, ``-0-`` with a trailing space is OFAC's null marker):

* ``sdn.csv``: ent_num, SDN_Name, SDN_Type, Program, Title, Call_Sign, Vess_type,
  Tonnage, GRT, Vess_flag, Vess_owner, Remarks. Individuals are written
  ``"LAST, First Middle"``; SDN_Type is ``individual``, ``vessel``, ``aircraft``
  or null for entities; several programs share one field as ``"IRAN] [SDGT"``.
* ``alt.csv``: ent_num, alt_num, alt_type (``a.k.a.``, ``f.k.a.``, ``n.k.a.``),
  alt_name, alt_remarks.

The sample files in ``data/`` (``sdn_sample.csv``, ``alt_sample.csv``) follow
that layout exactly, but every entry in them is FICTIONAL: invented names,
numbers and addresses for tests, not the real list.

Matching is token based. A name is normalized (NFKD, accents stripped,
casefolded, punctuation dropped, ``"LAST, First"`` put back in reading order)
into tokens; tokens are compared with Jaro-Winkler and the name score is the
best one-to-one alignment of tokens, with a penalty for tokens left unmatched
(see :func:`name_score`). Word order never matters, so ``"VOLKOV Dmitri"`` and
``"Dmitri Volkov"`` score 1.0, and spelling variants such as ``Dmitri`` and
``Dmitriy`` score close to it.

Screening runs at payment time, so :func:`screen` never scans the whole list:
the distinct tokens of the list are indexed by character bigram, a query token
is compared only with list tokens sharing enough bigrams with it, and only
names holding such tokens are scored (with an upper bound skipping those that
cannot reach the threshold).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path

import msgspec

# The fictional sample list shipped with the package (the default without a real list).
SAMPLE_SDN = Path(__file__).with_name("data") / "sdn_sample.csv"
SAMPLE_ALT = Path(__file__).with_name("data") / "alt_sample.csv"

NULL = "-0-"
SDN_COLUMNS = 12
ALT_COLUMNS = 5
DEFAULT_THRESHOLD = 0.90

# Token pairs below this Jaro-Winkler similarity count as unrelated: a partial
# credit for "smith" against "volkov" would only add noise to the name score.
TOKEN_FLOOR = 0.80
# Each token of the longer name left without a partner costs this share of the score,
# divided by that name's token count: leaving out a patronymic should cost a little.
# A missing surname costs far more, as it has no partner on the shorter side either.
MISSING_TOKEN_PENALTY = 0.20
# One matching token out of several is weak evidence ("Marcus" vs "HARTWELL, Marcus").
SINGLE_TOKEN_FACTOR = 0.90
# The prefilter scores a list token with Jaro-Winkler only if its character bigrams
# and the query token's have a Dice coefficient of at least this. A heuristic, not a
# bound: on synthetic names it skipped 0.2% of the token pairs at 0.85 or above (9% of
# those at 0.80-0.85, mostly long tokens sharing letters in another order) and no
# match at a threshold of 0.85 or 0.90; tests compare it with a full scan.
MIN_BIGRAM_DICE = 0.30
CACHE_SIZE = 50_000

# Name particles are written joined or apart ("AL-RASHID", "Alrashid", "Al Rashid");
# names containing one get a second token sequence with the particle glued on.
PARTICLES = frozenset(
    {"al", "el", "ul", "bin", "ibn", "bint", "abu", "abd", "van", "von", "de", "del",
     "der", "den", "la", "le", "di", "da", "du", "dos", "mac", "mc", "st"}
)  # fmt: skip
# Legal forms are spelled out or abbreviated at random across lists and payments.
LEGAL_FORMS = {
    "company": "co",
    "corporation": "corp",
    "limited": "ltd",
    "incorporated": "inc",
}
# A comma before one of these ends an entity name ("ACME, S.A."); it is not "LAST, First".
_LEGAL_SUFFIXES = frozenset(LEGAL_FORMS.values()) | {
    "llc", "llp", "lp", "plc", "sa", "sarl", "srl", "spa", "ag", "gmbh", "bv", "nv", "pte",
    "jsc", "pjsc", "ojsc", "cjsc", "fze", "fzco",
}  # fmt: skip
# Letters that NFKD leaves whole; without this "Łukasz" or "Søren" keep a letter
# no payment form in Latin script would carry.
_FOLD = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ŀ": "l",
     "ħ": "h", "ŧ": "t", "\N{LATIN SMALL LETTER DOTLESS I}": "i"}
)  # fmt: skip
# Dropped without a space, so "O'Brien" stays one token and "S.A." becomes "sa".
_JOINERS = frozenset("'`.\N{RIGHT SINGLE QUOTATION MARK}\N{ACUTE ACCENT}")


class SanctionsListError(ValueError):
    """A list file is unreadable or a row breaks the OFAC layout; says which file and line."""


class ListedName(msgspec.Struct, frozen=True):
    """One name of an entry (the primary SDN name or an alias), pre-normalized."""

    name: str  # as written in the list
    alt_type: str | None  # None for the primary name, else "a.k.a.", "f.k.a.", ...
    variants: tuple[tuple[str, ...], ...]  # token sequences, see name_variants()


class Entry(msgspec.Struct, frozen=True):
    ent_num: int
    name: str  # the primary SDN name
    sdn_type: str | None  # "individual", "vessel", "aircraft"; None for an entity
    programs: tuple[str, ...]
    names: tuple[ListedName, ...]  # primary first, then aliases in file order


class NameIndex(msgspec.Struct, frozen=True):
    """Lookup tables over the list's tokens; built once by :func:`build_list`."""

    vocab: tuple[str, ...]  # distinct tokens of every variant of every name
    vocab_bigrams: tuple[int, ...]  # number of distinct bigrams of each vocab token
    bigram_postings: dict[str, tuple[int, ...]]  # bigram -> vocab ids
    token_postings: tuple[tuple[int, ...], ...]  # vocab id -> key ids
    # A key is one token sequence of one name: (entry index, name index, vocab ids).
    keys: tuple[tuple[int, int, tuple[int, ...]], ...]
    # Query token -> _similar_tokens() result. Payee names repeat (and so do common
    # given names), so most tokens at payment time have been looked up before.
    cache: dict[str, dict[int, float]] = {}


class SanctionsList(msgspec.Struct, frozen=True):
    entries: tuple[Entry, ...]
    index: NameIndex

    @property
    def name_count(self) -> int:
        return sum(len(e.names) for e in self.entries)


class Match(msgspec.Struct, frozen=True):
    ent_num: int
    listed_name: str  # the entry's primary SDN name
    matched_name: str  # the name or alias that scored best
    score: float
    program: str  # the entry's programs, "; "-separated


# --------------------------------------------------------------------------- normalization


def _clean(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = stripped.casefold().translate(_FOLD)
    out: list[str] = []
    for c in folded:
        if c.isalnum():
            out.append(c)
        elif c not in _JOINERS:
            out.append(" ")
    return "".join(out)


def normalize(name: str) -> tuple[str, ...]:
    """Tokens of a name in reading order: ``"VOLKOV, Dmitri"`` -> ``("dmitri", "volkov")``.

    Only a single comma is read as "LAST, First": entity names such as
    ``"GOLDEN LOTUS CO., LTD."`` also contain commas, and there the part after the
    comma is a legal form, not a given name.
    """
    head, comma, tail = name.partition(",")
    if comma and "," not in tail:
        first = tuple(_clean(tail).split())
        if first and not all(t in LEGAL_FORMS or t in _LEGAL_SUFFIXES for t in first):
            tokens = first + tuple(_clean(head).split())
            return tuple(LEGAL_FORMS.get(t, t) for t in tokens)
    return tuple(LEGAL_FORMS.get(t, t) for t in _clean(name).split())


def name_variants(name: str) -> tuple[tuple[str, ...], ...]:
    """The token sequences a name is compared under: as split, and with particles joined."""
    tokens = normalize(name)
    if not tokens:
        return ()
    joined: list[str] = []
    glue = ""
    for t in tokens:
        if t in PARTICLES:
            glue += t
        else:
            joined.append(glue + t)
            glue = ""
    if glue:  # a trailing particle has nothing to attach to
        joined.append(glue)
    alt = tuple(joined)
    return (tokens,) if alt == tokens else (tokens, alt)


# --------------------------------------------------------------------------- similarity


def jaro(a: str, b: str) -> float:
    """Jaro similarity in [0, 1]: shared characters within a window, minus transpositions."""
    if a == b:
        return 1.0 if a else 0.0
    la, lb = len(a), len(b)
    if not la or not lb:
        return 0.0
    window = max(0, max(la, lb) // 2 - 1)
    # Matched characters of b are blanked out so str.find (C speed) skips them; this
    # runs thousands of times per screened name.
    rest = b
    a_hits: list[str] = []
    b_pos: list[int] = []
    for i, c in enumerate(a):
        j = rest.find(c, max(0, i - window), i + window + 1)
        if j >= 0:
            rest = rest[:j] + "\0" + rest[j + 1 :]
            a_hits.append(c)
            b_pos.append(j)
    m = len(a_hits)
    if not m:
        return 0.0
    b_pos.sort()
    # Matched characters out of order, each transposition counting twice.
    out_of_order = 0
    for c, j in zip(a_hits, b_pos, strict=True):
        if b[j] != c:
            out_of_order += 1
    return (m / la + m / lb + (m - out_of_order / 2) / m) / 3


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro similarity boosted by the common prefix (up to 4 characters), as Winkler defined it.

    The boost applies only above a Jaro of 0.7, Winkler's own cut-off: below it a
    shared first letter would lift pairs that have nothing else in common.
    """
    j = jaro(a, b)
    if j < 0.7:
        return j
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return j + prefix * prefix_scale * (1.0 - j)


def _align(n_query: int, n_listed: int, pairs: list[tuple[float, int, int]]) -> float:
    """Score one query token sequence against one listed sequence from candidate pairs.

    ``pairs`` holds (similarity, query position, listed position) for every pair at
    or above TOKEN_FLOOR. Greedy by similarity is optimal for the one-to-one case
    that matters (each token has one obvious partner) and costs no more than a sort.
    """
    pairs.sort(reverse=True)
    used_q: set[int] = set()
    used_l: set[int] = set()
    total = 0.0
    matched = 0
    for sim, i, j in pairs:
        if i in used_q or j in used_l:
            continue
        used_q.add(i)
        used_l.add(j)
        total += sim
        matched += 1
    if not matched:
        return 0.0
    shorter, longer = min(n_query, n_listed), max(n_query, n_listed)
    score = total / shorter * (1.0 - MISSING_TOKEN_PENALTY * (longer - matched) / longer)
    if matched == 1 and longer > 1:
        score *= SINGLE_TOKEN_FACTOR
    return score


def _upper_bound(n_query: int, n_listed: int, matchable: int) -> float:
    """Best score possible when only ``matchable`` query tokens have a partner at all."""
    shorter, longer = min(n_query, n_listed), max(n_query, n_listed)
    m = min(matchable, shorter)
    return m / shorter * (1.0 - MISSING_TOKEN_PENALTY * (longer - m) / longer)


def token_set_score(query: Sequence[str], listed: Sequence[str]) -> float:
    """Similarity of two token sequences in [0, 1], independent of token order.

    Tokens are paired one to one, best Jaro-Winkler first, ignoring pairs below
    TOKEN_FLOOR. The base is the mean similarity over the shorter sequence, so a
    token of the shorter name with no partner counts as 0; that base is then cut by
    MISSING_TOKEN_PENALTY times the share of the longer name's tokens left unmatched.
    """
    if not query or not listed:
        return 0.0
    pairs = []
    for i, q in enumerate(query):
        for j, t in enumerate(listed):
            sim = jaro_winkler(q, t)
            if sim >= TOKEN_FLOOR:
                pairs.append((sim, i, j))
    return _align(len(query), len(listed), pairs)


def name_score(a: str, b: str) -> float:
    """Full comparison of two raw names (every variant, no prefilter)."""
    best = 0.0
    for va in name_variants(a):
        for vb in name_variants(b):
            best = max(best, token_set_score(va, vb))
    return best


# --------------------------------------------------------------------------- index


def _bigrams(token: str) -> set[str]:
    # Padding makes the first and last letters count, as they do for Jaro-Winkler.
    padded = f"^{token}$"
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


def build_list(entries: Iterable[Entry]) -> SanctionsList:
    """Index entries for :func:`screen`; ``load_list`` calls it, tests may too."""
    entries = tuple(entries)
    vocab_ids: dict[str, int] = {}
    token_postings: list[list[int]] = []
    keys: list[tuple[int, int, tuple[int, ...]]] = []
    for ei, entry in enumerate(entries):
        for ni, listed in enumerate(entry.names):
            for variant in listed.variants:
                ids = []
                for tok in variant:
                    vid = vocab_ids.get(tok)
                    if vid is None:
                        vid = vocab_ids[tok] = len(vocab_ids)
                        token_postings.append([])
                    ids.append(vid)
                key_id = len(keys)
                keys.append((ei, ni, tuple(ids)))
                for vid in set(ids):
                    token_postings[vid].append(key_id)
    vocab = tuple(vocab_ids)
    postings: dict[str, list[int]] = {}
    counts = []
    for vid, tok in enumerate(vocab):
        grams = _bigrams(tok)
        counts.append(len(grams))
        for g in grams:
            postings.setdefault(g, []).append(vid)
    index = NameIndex(
        vocab=vocab,
        vocab_bigrams=tuple(counts),
        bigram_postings={g: tuple(v) for g, v in postings.items()},
        token_postings=tuple(tuple(p) for p in token_postings),
        keys=tuple(keys),
    )
    return SanctionsList(entries=entries, index=index)


def _similar_tokens(token: str, index: NameIndex) -> dict[int, float]:
    """Vocab ids whose Jaro-Winkler with ``token`` reaches TOKEN_FLOOR, with that similarity."""
    cached = index.cache.get(token)
    if cached is not None:
        return cached
    grams = _bigrams(token)
    postings = index.bigram_postings
    # Counter counts an iterable in C; a Python loop here was most of the screening time.
    shared = Counter(chain.from_iterable(postings.get(g, ()) for g in grams))
    n = len(grams)
    counts = index.vocab_bigrams
    vocab = index.vocab
    # Dice >= MIN_BIGRAM_DICE means 2k >= dice * (n + c) for k shared bigrams; every
    # vocab token has c >= 2, so k below the cut-off fails whatever its c, and the
    # comprehension drops the long tail of one-bigram coincidences cheaply.
    cut = MIN_BIGRAM_DICE * (n + 2) / 2
    out: dict[int, float] = {}
    for vid, k in [item for item in shared.items() if item[1] >= cut]:
        if 2 * k < MIN_BIGRAM_DICE * (n + counts[vid]):
            continue
        sim = jaro_winkler(token, vocab[vid])
        if sim >= TOKEN_FLOOR:
            out[vid] = sim
    if len(index.cache) >= CACHE_SIZE:
        index.cache.clear()  # crude, but bounded, and a refill costs one screening each
    index.cache[token] = out
    return out


# --------------------------------------------------------------------------- screening


def screen(name: str, lst: SanctionsList, threshold: float = DEFAULT_THRESHOLD) -> list[Match]:
    """Entries whose best name scores at least ``threshold`` against ``name``, best first.

    One Match per entry: an entry listed under five aliases is still one party.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    index = lst.index
    best: dict[int, tuple[float, int]] = {}  # entry index -> (score, -name index)
    for query in name_variants(name):
        sims = [_similar_tokens(tok, index) for tok in query]
        # How many query positions have some partner in each key bounds its score.
        # Common given names reach thousands of keys, hence counting in C (Counter)
        # and memoizing the bound per (key length, reach) instead of per key.
        postings = index.token_postings
        reach = Counter(
            chain.from_iterable(set(chain.from_iterable(postings[v] for v in s)) for s in sims)
        )
        nq = len(query)
        worth: dict[tuple[int, int], bool] = {}
        for key_id, matchable in reach.items():
            ei, ni, ids = index.keys[key_id]
            shape = (len(ids), matchable)
            ok = worth.get(shape)
            if ok is None:
                ok = worth[shape] = _upper_bound(nq, len(ids), matchable) >= threshold
            if not ok:
                continue
            pairs = [
                (sim, i, j)
                for i, s in enumerate(sims)
                for j, vid in enumerate(ids)
                if (sim := s.get(vid)) is not None
            ]
            score = _align(nq, len(ids), pairs)
            # Ties go to the lower name index, so the primary name beats an equal alias.
            if score >= threshold and (score, -ni) > best.get(ei, (-1.0, 0)):
                best[ei] = (score, -ni)
    matches = []
    for ei, (score, neg_ni) in best.items():
        entry = lst.entries[ei]
        matches.append(
            Match(
                ent_num=entry.ent_num,
                listed_name=entry.name,
                matched_name=entry.names[-neg_ni].name,
                score=score,
                program="; ".join(entry.programs),
            )
        )
    matches.sort(key=lambda m: (-m.score, m.ent_num))
    return matches


# --------------------------------------------------------------------------- loading


def _field(raw: str) -> str | None:
    value = raw.strip()
    return None if value == NULL or not value else value


def _read_rows(path: Path, width: int) -> Iterable[tuple[int, list[str]]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SanctionsListError(f"{path}: {e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Older OFAC exports are Windows-1252; cp1252 still rejects a few bytes.
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as e:
            raise SanctionsListError(f"{path}: neither UTF-8 nor Windows-1252: {e}") from e
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            # OFAC ends its files with a lone Ctrl-Z (0x1A) line, a DOS end-of-file mark.
            if not row or (len(row) == 1 and row[0].strip() in ("", "\x1a")):
                continue
            if len(row) != width:
                raise SanctionsListError(
                    f"{path}:{reader.line_num}: expected {width} columns, got {len(row)}"
                )
            yield reader.line_num, row
    except csv.Error as e:
        raise SanctionsListError(f"{path}:{reader.line_num}: {e}") from e


def _int(raw: str, what: str, where: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise SanctionsListError(f"{where}: {what} is not an integer: {raw!r}") from None


def _listed(name: str, alt_type: str | None, where: str) -> ListedName:
    variants = name_variants(name)
    if not variants:
        raise SanctionsListError(f"{where}: name has no letters or digits: {name!r}")
    return ListedName(name=name, alt_type=alt_type, variants=variants)


def load_list(sdn: Path, alt: Path | None = None) -> SanctionsList:
    """Parse ``sdn.csv`` (and ``alt.csv`` aliases if given) and index every name.

    Any row that breaks the layout raises :class:`SanctionsListError`: screening
    against a silently truncated list would pass parties it should stop.
    """
    primary: dict[int, tuple[str, str | None, tuple[str, ...]]] = {}
    for line, row in _read_rows(sdn, SDN_COLUMNS):
        where = f"{sdn}:{line}"
        ent = _int(row[0], "ent_num", where)
        if ent in primary:
            raise SanctionsListError(f"{where}: duplicate ent_num {ent}")
        name = _field(row[1])
        if name is None:
            raise SanctionsListError(f"{where}: SDN_Name is empty")
        program = _field(row[3])
        if program is None:
            raise SanctionsListError(f"{where}: Program is empty")
        programs = tuple(p.strip() for p in program.strip("[]").split("] [") if p.strip())
        primary[ent] = (name, _field(row[2]), programs)
    names: dict[int, list[ListedName]] = {
        ent: [_listed(name, None, f"{sdn}: ent_num {ent}")] for ent, (name, _, _) in primary.items()
    }
    if alt is not None:
        seen_alt: set[int] = set()
        for line, row in _read_rows(alt, ALT_COLUMNS):
            where = f"{alt}:{line}"
            ent = _int(row[0], "ent_num", where)
            alt_num = _int(row[1], "alt_num", where)
            if ent not in names:
                raise SanctionsListError(f"{where}: alias of unknown ent_num {ent}")
            if alt_num in seen_alt:
                raise SanctionsListError(f"{where}: duplicate alt_num {alt_num}")
            seen_alt.add(alt_num)
            alt_name = _field(row[3])
            if alt_name is None:
                raise SanctionsListError(f"{where}: alt_name is empty")
            names[ent].append(_listed(alt_name, _field(row[2]), where))
    entries = [
        Entry(ent_num=ent, name=name, sdn_type=kind, programs=programs, names=tuple(names[ent]))
        for ent, (name, kind, programs) in primary.items()
    ]
    return build_list(entries)
