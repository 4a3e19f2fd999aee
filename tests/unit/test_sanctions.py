"""Sanctions screening: the OFAC CSV loader, name normalization, scoring and the index.

Runs against the fictional sample list shipped in ``domain/risk/data`` and against
synthetic lists; no network, no database.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

import pytest

from paynode.domain.risk.sanctions import (
    SanctionsList,
    SanctionsListError,
    build_list,
    jaro,
    jaro_winkler,
    load_list,
    name_score,
    normalize,
    screen,
    token_set_score,
)

DATA = Path(__file__).resolve().parents[2] / "domain" / "risk" / "data"
SDN = DATA / "sdn_sample.csv"
ALT = DATA / "alt_sample.csv"

VOLKOV = 990101
RASHID_CO = 990102
RASHID_MK = 990103
HARTWELL = 990104
NORTHWIND = 990105
SERPENT = 990106
KRASNOVA = 990107
LOTUS = 990108


@pytest.fixture(scope="module")
def sample() -> SanctionsList:
    return load_list(SDN, ALT)


def ent_nums(name: str, lst: SanctionsList, threshold: float = 0.90) -> list[int]:
    return [m.ent_num for m in screen(name, lst, threshold)]


# --------------------------------------------------------------------------- loading


def test_sample_parses_every_row_and_alias(sample: SanctionsList) -> None:
    with SDN.open(newline="") as f:
        sdn_rows = list(csv.reader(f))
    with ALT.open(newline="") as f:
        alt_rows = list(csv.reader(f))
    assert len(sdn_rows) == 12 and len(alt_rows) == 10
    assert [e.ent_num for e in sample.entries] == [int(r[0]) for r in sdn_rows]
    assert [e.name for e in sample.entries] == [r[1] for r in sdn_rows]
    aliases = [(e.ent_num, n.name, n.alt_type) for e in sample.entries for n in e.names[1:]]
    assert aliases == [(int(r[0]), r[3], r[2]) for r in alt_rows]
    assert sample.name_count == 22
    by_num = {e.ent_num: e for e in sample.entries}
    assert by_num[VOLKOV].sdn_type == "individual"
    assert by_num[RASHID_CO].sdn_type is None  # "-0- ": OFAC leaves entities untyped
    assert by_num[SERPENT].sdn_type == "vessel"
    assert by_num[NORTHWIND].programs == ("IRAN", "SDGT")
    assert by_num[KRASNOVA].programs == ("UKRAINE-EO13662", "RUSSIA-EO14024")
    assert by_num[VOLKOV].names[0].variants == (("dmitri", "ivanovich", "volkov"),)


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


GOOD_ROW = '1,"DOE, John","individual","SDGT",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- \n'


@pytest.mark.parametrize(
    ("sdn_text", "alt_text", "message"),
    [
        (GOOD_ROW + '2,"SHORT ROW",-0- ,"SDGT"\n', None, "sdn.csv:2: expected 12 columns, got 4"),
        (GOOD_ROW + GOOD_ROW.replace("1,", "x1,", 1), None, "sdn.csv:2: ent_num is not an"),
        (GOOD_ROW + GOOD_ROW, None, "sdn.csv:2: duplicate ent_num 1"),
        (GOOD_ROW.replace('"DOE, John"', "-0- "), None, "sdn.csv:1: SDN_Name is empty"),
        (GOOD_ROW.replace('"SDGT"', "-0- "), None, "sdn.csv:1: Program is empty"),
        (GOOD_ROW.replace('"DOE, John"', '"-- ,"'), None, "name has no letters or digits"),
        (GOOD_ROW + '2,"UNTERMINATED,-0- \n', None, "sdn.csv:"),
        (GOOD_ROW, '7,1,"a.k.a.","SOMEONE",-0- \n', "alt.csv:1: alias of unknown ent_num 7"),
        (GOOD_ROW, '1,1,"a.k.a.","SOMEONE"\n', "alt.csv:1: expected 5 columns, got 4"),
        (GOOD_ROW, '1,1,"a.k.a.","A",-0- \n1,1,"a.k.a.","B",-0- \n', "duplicate alt_num 1"),
        (GOOD_ROW, '1,1,"a.k.a.",-0- ,-0- \n', "alt.csv:1: alt_name is empty"),
    ],
)
def test_malformed_rows_raise_a_clear_error(
    tmp_path: Path, sdn_text: str, alt_text: str | None, message: str
) -> None:
    sdn = _write(tmp_path, "sdn.csv", sdn_text)
    alt = None if alt_text is None else _write(tmp_path, "alt.csv", alt_text)
    with pytest.raises(SanctionsListError, match=message.replace("(", r"\(")):
        load_list(sdn, alt)


def test_missing_file_is_a_sanctions_list_error(tmp_path: Path) -> None:
    with pytest.raises(SanctionsListError, match=r"nope\.csv"):
        load_list(tmp_path / "nope.csv")


def test_real_file_quirks_are_accepted(tmp_path: Path) -> None:
    # CRLF line ends, Windows-1252 bytes and the trailing Ctrl-Z line of OFAC's exports.
    row = GOOD_ROW.replace("DOE, John", "MÜLLER, Jürgen").replace("\n", "\r\n")
    sdn = _write(tmp_path, "sdn.csv", row + "\x1a", encoding="cp1252")
    lst = load_list(sdn, None)
    assert [e.name for e in lst.entries] == ["MÜLLER, Jürgen"]
    assert ent_nums("Jurgen Muller", lst) == [1]


# --------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("VOLKOV, Dmitri Ivanovich", ("dmitri", "ivanovich", "volkov")),
        ("  dmitri   VOLKOV ", ("dmitri", "volkov")),
        ("José  Ñúñez-O'Brien", ("jose", "nunez", "obrien")),
        ("Søren Łukasz Æbeltoft", ("soren", "lukasz", "aebeltoft")),
        (
            "GOLDEN LOTUS IMPORT-EXPORT CO., LTD.",
            ("golden", "lotus", "import", "export", "co", "ltd"),
        ),
        ("Acme Trading Company Limited", ("acme", "trading", "co", "ltd")),
        ("S.A. ﬁnance", ("sa", "finance")),  # the ligature is a compatibility character
        ("...", ()),
    ],
)
def test_normalize(raw: str, tokens: tuple[str, ...]) -> None:
    assert normalize(raw) == tokens


# --------------------------------------------------------------------------- similarity


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("martha", "marhta", 0.9611),
        ("dwayne", "duane", 0.84),
        ("dixon", "dicksonx", 0.8133),
        ("dmitri", "dmitri", 1.0),
        ("", "abc", 0.0),
        ("abc", "xyz", 0.0),
    ],
)
def test_jaro_winkler_reference_values(a: str, b: str, expected: float) -> None:
    assert jaro_winkler(a, b) == pytest.approx(expected, abs=1e-4)
    assert jaro_winkler(b, a) == pytest.approx(expected, abs=1e-4)


def test_jaro_counts_transpositions() -> None:
    assert jaro("crate", "trace") == pytest.approx(0.7333, abs=1e-4)


def test_token_set_score_ignores_order_and_penalizes_missing_tokens() -> None:
    full = ("dmitri", "ivanovich", "volkov")
    assert token_set_score(("volkov", "ivanovich", "dmitri"), full) == 1.0
    two = token_set_score(("dmitri", "volkov"), full)
    one = token_set_score(("volkov",), full)
    assert 0.9 < two < 1.0
    assert one < 0.9 < two
    assert token_set_score(("dmitri", "petrov"), full) < 0.5
    assert token_set_score((), full) == 0.0


# --------------------------------------------------------------------------- screening


@pytest.mark.parametrize(
    ("query", "expected", "matched_name"),
    [
        ("VOLKOV, Dmitri Ivanovich", VOLKOV, "VOLKOV, Dmitri Ivanovich"),
        ("Dmitri Volkov", VOLKOV, None),  # order swapped, patronymic left out
        ("VOLKOV Dmitri", VOLKOV, None),
        ("dmitri volkov", VOLKOV, None),
        ("Dmítri Vólkov", VOLKOV, None),
        ("Dmitriy Volkov", VOLKOV, None),
        ("Dmitriy Ivanovich Volkov", VOLKOV, None),
        ("Dmitrij Wolkow", VOLKOV, "WOLKOW, Dmitrij Iwanowitsch"),  # German transliteration
        ("Marcus James Hartwell", HARTWELL, "HARTWELL, Marcus"),  # extra middle name
        ("Mohammed Al-Rashid", RASHID_MK, "AL-RASHID, Mohammed Khalid"),
        ("Mohamed Alrashid", RASHID_MK, "AL-RASHID, Mohammed Khalid"),
        ("Abu Khalid", RASHID_MK, "ABU KHALID"),  # alias
        ("Al Rashid Trading Co", RASHID_CO, "AL-RASHID TRADING COMPANY"),
        ("Rashid General Trading Company", RASHID_CO, "RASHID GENERAL TRADING CO."),
        ("Northwind Shipping", NORTHWIND, "NORTHWIND SHIPPING"),  # former name
        ("Ocean Grace", SERPENT, "OCEAN GRACE"),  # the vessel's former name
        ("Jelena Krasnowa", KRASNOVA, "KRASNOVA, Elena"),
        ("Golden Lotus Import Export Company Limited", LOTUS, None),
    ],
)
def test_listed_names_and_variants_are_caught(
    sample: SanctionsList, query: str, expected: int, matched_name: str | None
) -> None:
    matches = screen(query, sample)
    assert matches, query
    assert matches[0].ent_num == expected
    assert matches[0].score >= 0.90
    if matched_name is not None:
        assert matches[0].matched_name == matched_name


@pytest.mark.parametrize(
    ("query", "not_expected"),
    [
        ("Dmitri Petrov", VOLKOV),  # same first name, different surname
        ("Mohammed Smith", RASHID_MK),  # one common token only
        ("Mohammed Smith", RASHID_CO),
        ("Volkova Anna", VOLKOV),  # similar surname, different first name
        ("Marcus", HARTWELL),  # a given name alone
        ("Smith Trading Company", RASHID_CO),  # generic business words only
        ("Yelena Petrova", KRASNOVA),
    ],
)
def test_near_misses_are_not_caught(sample: SanctionsList, query: str, not_expected: int) -> None:
    assert not_expected not in ent_nums(query, sample)


def test_unrelated_names_return_nothing(sample: SanctionsList) -> None:
    for query in ("John Smith", "Maria Garcia Lopez", "Acme Widgets LLC", "", "  --  "):
        assert screen(query, sample) == []


def test_match_fields(sample: SanctionsList) -> None:
    [m] = screen("northwind shipping", sample)
    assert m.ent_num == NORTHWIND
    assert m.listed_name == "NORTHWIND MARITIME LOGISTICS LLC"
    assert m.matched_name == "NORTHWIND SHIPPING"
    assert m.program == "IRAN; SDGT"
    assert m.score == 1.0


def test_threshold_is_respected(sample: SanctionsList) -> None:
    [m] = screen("Dmitriy Volkov", sample)
    assert 0.90 <= m.score < 1.0
    assert ent_nums("Dmitriy Volkov", sample, threshold=m.score) == [VOLKOV]
    assert ent_nums("Dmitriy Volkov", sample, threshold=m.score + 0.001) == []
    assert ent_nums("Dmitri Petrov", sample) == []
    assert VOLKOV in ent_nums("Dmitri Petrov", sample, threshold=0.3)
    for threshold in (0.5, 0.75, 0.9):
        assert all(x.score >= threshold for x in screen("Mohammed Rashid", sample, threshold))
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="threshold"):
            screen("Dmitri Volkov", sample, bad)


def test_results_are_sorted_best_first_one_per_entry(sample: SanctionsList) -> None:
    matches = screen("Mohammed Al-Rashid", sample, threshold=0.5)
    assert [m.ent_num for m in matches][:2] == [RASHID_MK, RASHID_CO]
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert len({m.ent_num for m in matches}) == len(matches)


def test_primary_name_wins_a_tie_with_an_alias(sample: SanctionsList) -> None:
    [m] = screen("Volkov Dmitri Ivanovich", sample)
    assert (m.matched_name, m.score) == ("VOLKOV, Dmitri Ivanovich", 1.0)


# --------------------------------------------------------------------------- index


# Syllable parts for invented names: onsets, vowels, codas, surname endings.
_ONSETS = (
    "b", "d", "k", "g", "m", "n", "r", "s", "t", "v", "z", "sh", "kh", "ch", "zh", "f", "h",
    "l", "p", "y", "ts", "st", "tr", "br", "gr", "dr", "kr", "pr", "j", "w", "",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ia", "ou", "ai", "ei", "y", "aa", "ee")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "v", "d", "sh", "t")
_SUFFIXES = (
    "", "", "", "ov", "ova", "ski", "enko", "ullah", "ani", "escu", "berg", "son", "ez",
    "idze", "yan",
)  # fmt: skip
_BUSINESS = (
    "trading", "shipping", "holding", "group", "bank", "investment", "petroleum", "maritime",
    "logistics", "industrial", "general", "international", "import", "export", "energy",
    "development", "finance", "services", "mining",
)  # fmt: skip


def _word(r: random.Random) -> str:
    return "".join(
        r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(r.randint(2, 3))
    )


def synthetic_list(tmp_path: Path, n: int, seed: int) -> SanctionsList:
    """Invented names in SDN style: a few very common given names, many surnames."""
    r = random.Random(seed)
    given = [_word(r).capitalize() for _ in range(600)]
    weights = [1 / (i + 1) for i in range(600)]  # Zipf: some given names are everywhere
    sdn_lines, alt_lines = [], []
    for ent in range(1, n + 1):
        if r.random() < 0.6:
            first = " ".join(r.choices(given, weights, k=r.randint(1, 2)))
            name = f"{(_word(r) + r.choice(_SUFFIXES)).upper()}, {first}"
        else:
            words = [_word(r) for _ in range(r.randint(1, 2))]
            words += r.sample(_BUSINESS, r.randint(0, 3))
            name = " ".join(words).upper() + r.choice(["", " LLC", " LTD", " CO"])
        sdn_lines.append(f'{ent},"{name}",-0- ,"SDGT"' + ",-0- " * 8)
        if r.random() < 0.3:
            alias = f"{_word(r)} {_word(r)}".upper()
            alt_lines.append(f'{ent},{len(alt_lines) + 1},"a.k.a.","{alias}",-0- ')
    sdn = _write(tmp_path, "synthetic_sdn.csv", "\n".join(sdn_lines))
    alt = _write(tmp_path, "synthetic_alt.csv", "\n".join(alt_lines))
    return load_list(sdn, alt)


def _variant_of(r: random.Random, name: str) -> str:
    """A listed name as a payer might type it: shuffled, with one vowel changed per token."""
    tokens = list(normalize(name))
    r.shuffle(tokens)
    out = []
    for t in tokens:
        if len(t) > 4 and r.random() < 0.5:
            i = r.randrange(1, len(t))
            t = t[:i] + r.choice("aeiouy") + t[i + 1 :]
        out.append(t)
    return " ".join(out)


def _full_scan(query: str, lst: SanctionsList, threshold: float) -> set[int]:
    hits = set()
    for entry in lst.entries:
        best = max(name_score(query, n.name) for n in entry.names)
        if best >= threshold:
            hits.add(entry.ent_num)
    return hits


@pytest.mark.parametrize("threshold", [0.85, 0.90])
def test_index_finds_what_a_full_scan_finds(tmp_path: Path, threshold: float) -> None:
    lst = synthetic_list(tmp_path, 600, seed=3)
    r = random.Random(11)
    for _ in range(25):
        query = _variant_of(r, r.choice(lst.entries).name)
        assert set(ent_nums(query, lst, threshold)) == _full_scan(query, lst, threshold), query


def test_screening_15000_names_is_fast(tmp_path: Path) -> None:
    lst = synthetic_list(tmp_path, 15_000, seed=1)
    assert len(lst.entries) == 15_000
    r = random.Random(7)
    queries = [_variant_of(r, r.choice(lst.entries).name) for _ in range(40)]
    started = time.perf_counter()
    found = 0
    for q in queries:
        lst.index.cache.clear()  # time the cold path, as for a never-seen payee
        found += bool(screen(q, lst))
    elapsed = time.perf_counter() - started
    assert found == len(queries)
    # About 7 ms a name on a laptop; a full scan would take well over a second each.
    assert elapsed / len(queries) < 0.1, f"{elapsed / len(queries) * 1e3:.1f} ms per name"


def test_build_list_of_no_entries_screens_to_nothing() -> None:
    assert screen("Dmitri Volkov", build_list([])) == []
