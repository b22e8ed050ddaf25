"""Stored names (issue 32): short enough for any file system, never two that one checkout would merge."""

import unicodedata

from components.core.data.sources.names import NAME_MAX, Namer, shorten


def test_a_long_name_keeps_its_extension_a_whole_escape_and_a_hash_of_itself():
    name = "%8B%B9" * 60 + "é" * 10 + ".png"  # 380 bytes
    short = shorten(name)
    assert len(short.encode()) <= NAME_MAX and short.endswith(".png")
    head, tag = short[:-4].rsplit("~", 1)
    assert name.startswith(head) and len(head) % 3 == 0 and len(tag) == 10  # no %XX escape cut in two
    assert shorten(name) == short and shorten(name[:-5] + "x.png") != short  # deterministic, distinct
    assert shorten("a.png") == "a.png" and shorten("x" * 255) == "x" * 255


def test_a_long_multibyte_name_is_cut_between_characters():
    short = shorten("胸" * 100)  # 300 bytes, no extension
    assert len(short.encode()) <= NAME_MAX and short.startswith("胸" * 81) and short[81] == "~"


def test_twins_are_kept_apart_and_each_rename_is_explained():
    namer = Namer()
    out = [namer.claim(p) for p in ["N/Scan.png", "N/scan.png", "N/SCAN.png", "N/caf\u00e9.png",
                                    "N/cafe\u0301.png", "N/x\\y.png", "N/Scan.png"]]
    paths = [p for p, _ in out]
    assert paths == ["N/Scan.png", "N/scan-2.png", "N/SCAN-3.png", "N/caf\u00e9.png", "N/cafe\u0301-2.png",
                     "N/x%5Cy.png", "N/Scan-4.png"]
    assert len({unicodedata.normalize("NFC", p).casefold() for p in paths}) == len(paths)
    assert [[r for r, _ in why] for _, why in out] == [[], ["case_twin"], ["case_twin"], [], ["unicode_twin"],
                                                      ["backslash_in_name"], ["name_taken"]]
    assert out[1][1][0][1] == ("'N/scan.png' and 'N/Scan.png' differ only in letter case: one file on a "
                               "case-insensitive checkout (macOS, Windows); stored as 'N/scan-2.png'")
    assert out[4][1][0][1] == ("'N/cafe\\u0301.png' and 'N/caf\\xe9.png' are one name in two Unicode normalisations "
                               "(NFC/NFD): one file on macOS; stored as 'N/cafe\u0301-2.png'")
    assert Namer().claim("N/x.png", "n/x.png")[1] == []
    merged = Namer()
    merged.claim("N/x.png")
    assert merged.claim("N/x.png", "n/x.png")[1] == [("name_taken", "'n/x.png' is stored as 'N/x.png': 'N/x.png' is "
                                                                  "another image's path; stored as 'N/x-2.png'")]
