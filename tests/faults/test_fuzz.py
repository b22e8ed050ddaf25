"""Fuzzing with hypothesis: hostile image bytes through the one decoder that validate, predict and
/predict share, random params.yaml structures through the schema, params.yaml text and ``--set`` values with YAML
oddities (each loads with exactly the meaning written, or is refused with a message), and hostile CSV manifests and
folders (names, encodings, separators, quoting, BOM/CRLF, ``..``, absolute paths, links) through ingest and
predict; hostile tree names (case and Unicode twins, backslashes, names past 255 bytes once encoded) through
ingest."""

import argparse
import contextlib
import io
import os
import struct
import tempfile
import unicodedata
import zlib
from pathlib import Path, PurePosixPath

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.core.contract.errors import ParamsError
from components.core.contract.params.schema import load_params, parse_params
from components.core.data import images
from tests.imagegen import encode, gray, write_tree

SEEDS = [encode(gray(48, 40, seed=1), "JPEG"), encode(gray(48, 40, seed=2), "PNG"),
         encode(gray(40, 40, seed=3), "PNG", mode="RGB"), encode(gray(40, 40, seed=4), "BMP"),
         encode(gray(40, 40, seed=5), "TIFF")]
DICOM_LIKE = b"\0" * 128 + b"DICM"
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def png_with_dims(w: int, h: int, body: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from([*SEEDS, DICOM_LIKE + bytes(64)])))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:i]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[i:i + draw(st.integers(1, 32))]
    return bytes(data)


hostile = st.one_of(
    st.binary(max_size=2048),
    mutated(),
    st.builds(png_with_dims, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=64)),
)


def check_decoder(data: bytes) -> None:
    facts = images.inspect_bytes(data, max_pixels=4_000_000)  # never raises
    assert facts.decodable or facts.reason
    try:
        out = images.load_for_model(data, 32, "crop", max_pixels=4_000_000)
        # without limits (preprocess, which reads validated files only) corrupt data is not looked for
        assert out.shape == (32, 32) and (facts.decodable or facts.reason == "corrupt_data")
    except images.ImageError as err:
        assert err.reason  # a short reason: quarantined in validate, a row error in predict, a 4xx in /predict


@FUZZ
@given(hostile)
def test_decoder_never_crashes_or_hangs(data):
    check_decoder(data)


@pytest.fixture(scope="module")
def api(tiny_model_dir):
    from components.core.registry import registry
    from serving.app import Settings, create_app

    return TestClient(create_app(registry.load(str(tiny_model_dir)), Settings(max_pixels=4_000_000)),
                      raise_server_exceptions=False)


@FUZZ
@given(data=hostile)
def test_predict_endpoint_answers_200_or_4xx(api, data):
    r = api.post("/predict", files={"file": ("x.png", io.BytesIO(data))})
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    assert "Traceback" not in r.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=20)
sections = st.sampled_from(["data", "validate", "split", "preprocess", "train", "evaluate", "gate", "registry",
                            "mlflow", "trian"])
keys = st.sampled_from(["source", "path", "classes", "seed", "val_fraction", "backbone", "image_size", "phases",
                        "weights", "min_sensitivity", "external", "bootstrap", "critical", "workers", "x"])


@FUZZ
@given(st.one_of(json_values, st.dictionaries(sections, st.dictionaries(keys, json_values, max_size=4), max_size=4)))
def test_random_params_give_schema_errors_never_tracebacks(raw):
    try:
        parse_params(raw, "fuzzed params.yaml")
    except ParamsError as err:
        assert str(err).startswith("fuzzed params.yaml")


# ---------------------------------------------------------------- params.yaml and --set text (issue 32)
# Each YAML token, and what it means in a key of each kind (bool, int, float, str, nullable str); a kind it is
# missing from must be refused. The oracle of components/core/contract/params/reading.py and strict.py.
TOKENS: dict[str, dict[str, object]] = {
    "yes": {"bool": True, "str": "yes"}, "No": {"bool": False, "str": "No"}, "on": {"bool": True, "str": "on"},
    "OFF": {"bool": False, "str": "OFF"}, "true": {"bool": True}, "False": {"bool": False}, "y": {"str": "y"},
    "12": {"int": 12, "float": 12.0}, "-3": {"int": -3, "float": -3.0}, "+7": {"int": 7, "float": 7.0},
    "12.0": {"int": 12, "float": 12.0}, "2.5": {"float": 2.5}, "-1.5e-3": {"float": -0.0015},
    "1e3": {"int": 1000, "float": 1000.0}, "1.0e3": {"int": 1000, "float": 1000.0},
    "1.0e+3": {"int": 1000, "float": 1000.0}, "0x10": {"int": 16, "float": 16.0},
    "010": {"str": "010"}, "0o17": {"str": "0o17"}, "1_000": {"str": "1_000"}, "1:30": {"str": "1:30"},
    "0b11": {"str": "0b11"}, "2024-01-01": {"str": "2024-01-01"}, "=": {"str": "="},
    ".inf": {}, "-.inf": {}, ".nan": {}, "~": {"null": None}, "null": {"null": None}, "": {"null": None},
    "'yes'": {"str": "yes"}, "'12'": {"str": "12"}, '"1e3"': {"str": "1e3"}, "'a: b'": {"str": "a: b"},
    "hello": {"str": "hello"}, "!!str 12": {"str": "12"}, "!!float 3": {"int": 3, "float": 3.0},
    "[1, 2]": {}, "{a: 1}": {}, "a: b": {}, "!!python/name:os.system": {}, "*nowhere": {},
}
FIELDS: dict[tuple[str, ...], tuple[str, object]] = {  # key -> (kind, extra rule on the value)
    ("review", "enabled"): ("bool", None), ("train", "calibrate"): ("bool", None),
    ("split", "use_official_test"): ("bool", None), ("gate", "use_lower_ci"): ("bool", None),
    ("split", "seed"): ("int", None), ("train", "seed"): ("int", None),
    ("evaluate", "bootstrap", "seed"): ("int", None), ("data", "demo", "seed"): ("int", None),
    ("train", "reduce_lr", "min_lr"): ("float", lambda v: v >= 0),
    ("monitor", "window_hours"): ("float", lambda v: v > 0), ("data", "kaggle_dataset"): ("str", None),
    ("train", "early_stopping", "monitor"): ("str", None), ("data", "path"): ("str?", None),
    ("data", "root"): ("str?", None),
}
NO_MEANING = object()


def meaning(token: str, key: tuple[str, ...]) -> object:
    kind, rule = FIELDS[key]
    means = TOKENS[token]
    if kind == "str?" and "null" in means:
        return None
    value = means.get(kind.rstrip("?"), NO_MEANING)
    return value if value is NO_MEANING or rule is None or rule(value) else NO_MEANING


def to_yaml(tree: dict, indent: int = 0) -> str:
    out = ""
    for key, value in tree.items():
        name = key[0] if isinstance(key, tuple) else key  # ("seed", 2): a second "seed" line
        if isinstance(value, dict):
            out += f"{' ' * indent}{name}:\n{to_yaml(value, indent + 2)}"
        else:
            out += f"{' ' * indent}{name}: {value}\n".rstrip(" \n") + "\n"
    return out


def dumped_at(params, key: tuple[str, ...]) -> object:
    node = params.model_dump(by_alias=True)
    for part in key:
        node = node[part]
    return node


def check_meaning(load, expected: dict, refused: str | None, shown: str) -> None:
    """``load()`` must give exactly ``expected`` (key -> value), or a ParamsError when ``refused`` says why."""
    try:
        params = load()
    except ParamsError as err:
        assert refused, f"refused although every value has one meaning:\n{shown}\n{err}"
        return
    assert not refused, f"loaded although {refused}:\n{shown}"
    for key, value in expected.items():
        got = dumped_at(params, key)
        assert got == value and type(got) is type(value), f"{'.'.join(key)}: {got!r}, expected {value!r}:\n{shown}"


@st.composite
def params_texts(draw):
    """A params.yaml of random keys and YAML oddities, sometimes an anchor and its alias, a duplicate or a typo:
    (the text, the meaning each key must get or NO_MEANING, why the file must be refused whatever its values)."""
    keys = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=5, unique=True))
    tokens = [draw(st.sampled_from(sorted(TOKENS))) for _ in keys]
    tree: dict = {}
    expected, refused = {}, None
    alias = len(keys) > 1 and draw(st.booleans())
    for i, (key, token) in enumerate(zip(keys, tokens, strict=True)):
        text, means_token = token, token
        if alias and i == 0 and token and not token.startswith(("!!", "*", "a:")):
            text = f"&v {token}"
        elif alias and i == len(keys) - 1 and tokens[0] and not tokens[0].startswith(("!!", "*", "a:")):
            text, means_token = "*v", tokens[0]
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = text
        expected[key] = meaning(means_token, key)
    if draw(st.integers(0, 4)) == 0:  # a duplicate key
        node = tree
        for part in keys[0][:-1]:
            node = node[part]
        node[(keys[0][-1], 2)] = draw(st.sampled_from(["1", "true", "x"]))
        refused = "a key is duplicated"
    if draw(st.integers(0, 6)) == 0:
        tree.setdefault("trian", {})["seed"] = "1"
        refused = "trian is no section"
    return to_yaml(tree), expected, refused


PARAMS_FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:  # module scope: hypothesis reruns a test body in one function call
    return tmp_path_factory.mktemp("params-fuzz")


def load_text(folder: Path, data: str | bytes):
    """``cxr``'s own reading of a params file with this content."""
    path = folder / "params.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return load_params(path)


def load_set(folder: Path, items: list[str], text: str = ""):
    """``cxr <step> --set ITEM…`` over a params file with this content, as the CLI reads them."""
    from cxr.cli import _params

    (folder / "base.yaml").write_text(text)
    return _params(argparse.Namespace(params=str(folder / "base.yaml"), set=items))


@PARAMS_FUZZ
@given(params_texts())
def test_params_text_loads_with_the_meaning_written_or_is_refused(scratch, case):
    text, expected, refused = case
    refused = refused or next((f"{'.'.join(k)} has no meaning" for k, v in expected.items() if v is NO_MEANING), None)
    check_meaning(lambda: load_text(scratch, text), expected, refused, text)


@PARAMS_FUZZ
@given(params_texts(), st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4, unique=True), st.data())
def test_set_values_load_with_the_meaning_written_or_are_refused(scratch, case, keys, data):
    """``--set`` over a params file with oddities of its own: a key set wins over the file's value."""
    text, expected, refused = case
    tokens = [data.draw(st.sampled_from(sorted(TOKENS))) for _ in keys]
    items = [f"{'.'.join(k)}={t}" for k, t in zip(keys, tokens, strict=True)]
    expected = {**expected, **{k: meaning(t, k) for k, t in zip(keys, tokens, strict=True)}}
    refused = refused or next((f"{'.'.join(k)} has no meaning" for k, v in expected.items() if v is NO_MEANING), None)
    check_meaning(lambda: load_set(scratch, items, text), expected, refused, text + "\n" + "\n".join(items))


yaml_chars = st.text(st.sampled_from(list(" :-[]{}&*!|>'\"%@#,?\n\tabyesno0123.e_~<=x\\")), max_size=120)


@FUZZ
@given(st.one_of(yaml_chars, st.text(max_size=60), st.binary(max_size=60)))
def test_any_text_or_bytes_is_params_or_a_message(scratch, data):
    with contextlib.suppress(ParamsError):
        load_text(scratch, data)
    with contextlib.suppress(ParamsError):
        load_set(scratch, [f"train.seed={data if isinstance(data, str) else data.decode('latin-1')}"])


# ---------------------------------------------------------------- CSV manifests and predict inputs (issue 23)
INPUT_FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
GOOD_PNG = encode(gray(40, 40, seed=11))
name_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0\\"), min_size=1,
                    max_size=10).filter(lambda s: s not in (".", ".."))
file_names = st.one_of(  # text names, names with bytes that are not UTF-8, dot names
    st.builds(lambda s, ext: os.fsencode(s + ext), name_text, st.sampled_from([".png", ".jpeg", ".txt", ""])),
    st.builds(lambda b, ext: b + ext, st.binary(min_size=1, max_size=6).filter(
        lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")), st.sampled_from([b".png", b""])),
)
path_kinds = st.sampled_from(["file", "file_abs", "file_backslash", "outside_rel", "outside_abs", "link_out",
                              "link_in", "dotdot_in", "missing", "random", "empty"])
labels = st.one_of(st.sampled_from(["NORMAL", "pneumonia", " Normal ", ".PNEUMONIA", "viral", ""]),
                   st.sampled_from(["NORMAL", "PNEUMONIA"]), name_text)  # mostly known: ingest gets to write


@st.composite
def hostile_csv(draw):
    """(files to create, rows as (kind, file index, random path, label, patient id), CSV dialect); two rows
    naming good images of both classes come first (:func:`build_csv`)."""
    files = draw(st.lists(st.tuples(file_names, st.booleans()), min_size=1, max_size=5,
                          unique_by=lambda t: t[0]))
    rows = draw(st.lists(st.tuples(path_kinds, st.integers(0, len(files) - 1), name_text, labels, name_text),
                         min_size=1, max_size=8))
    dialect = {"sep": draw(st.sampled_from([",", ";", "\t"])), "quote_all": draw(st.booleans()),
               "bom": draw(st.booleans()), "crlf": draw(st.booleans()), "latin1": draw(st.booleans()),
               "surplus": draw(st.booleans())}
    return files, rows, dialect


def build_csv(tmp: Path, files, rows, dialect) -> tuple[Path, Path, list[bool]]:
    """The data folder, its CSV and, per row, whether it names something outside the data folder."""
    import csv as csvmod

    data, outside = tmp / "data", tmp / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(GOOD_PNG)
    names = []
    for raw, is_image in files:
        with open(os.path.join(os.fsencode(data), raw), "wb") as fh:
            fh.write(GOOD_PNG if is_image else b"not an image")
        names.append(os.fsdecode(raw))
    os.symlink(outside / "secret.png", data / "zz-out.png")
    os.symlink(os.fsencode(data) + b"/" + files[0][0], data / "zz-in.png")
    write_tree(data, {"base/n.png": encode(gray(40, 40, seed=12)), "base/p.png": encode(gray(40, 40, seed=13))})
    out_rows, escapes = [["base/n.png", "NORMAL", "n"], ["base/p.png", "PNEUMONIA", "p"]], [False, False]
    for kind, i, text, label, patient in rows:
        path = {"file": names[i], "file_abs": str(data) + "/" + names[i], "file_backslash": "sub\\" + names[i],
                "outside_rel": "../outside/secret.png", "outside_abs": str(outside / "secret.png"),
                "link_out": "zz-out.png", "link_in": "zz-in.png", "dotdot_in": "x/../" + names[i],
                "missing": "missing-" + text + ".png", "random": text, "empty": ""}[kind]
        out_rows.append([path, label, patient])
        escapes.append(kind in ("outside_rel", "outside_abs", "link_out"))
    buf = io.StringIO(newline="")
    # a bare \r is a line end to every CSV reader: csv.writer quotes it only when \r ends its lines, so quote all
    quote_all = dialect["quote_all"] or any("\r" in f for r in out_rows for f in r)
    writer = csvmod.writer(buf, delimiter=dialect["sep"], lineterminator="\r\n" if dialect["crlf"] else "\n",
                           quoting=csvmod.QUOTE_ALL if quote_all else csvmod.QUOTE_MINIMAL)
    writer.writerow(["path", "label", "patient_id"])
    for r in out_rows:
        writer.writerow(r + (["surplus"] if dialect["surplus"] and r is out_rows[-1] else []))
    text = ("\ufeff" if dialect["bom"] else "") + buf.getvalue()
    raw = text.encode("utf-8", "surrogateescape")
    if dialect["latin1"]:
        with contextlib.suppress(UnicodeEncodeError):  # characters Latin-1 lacks: the UTF-8 bytes stay
            raw = text.encode("latin-1", "surrogateescape")
    (data / "list.csv").write_bytes(raw)
    return data, data / "list.csv", escapes


@INPUT_FUZZ
@given(hostile_csv())
def test_csv_ingest_accounts_for_every_row_and_stays_inside_the_root(case):
    import pandas as pd

    from components.core.contract.errors import DataError
    from components.core.contract.params.data import DataConfig
    from components.core.data import manifest, sources
    from components.core.data.sources import table

    files, rows, dialect = case
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data, csv_path, _ = build_csv(tmp, files, rows, dialect)
        scan = table.scan_csv(csv_path)  # a CSV written by csv.writer: read without a DataError
        assert len(scan.entries) + sum(1 for s in scan.skipped if s.get("line")) == len(rows) + 2
        real_data = data.resolve()
        for e in scan.entries:
            assert Path(e.src).resolve().is_relative_to(real_data)
            assert not PurePosixPath(e.dest).is_absolute() and ".." not in PurePosixPath(e.dest).parts
            e.dest.encode("utf-8")  # percent-encoded: valid UTF-8
        cfg = DataConfig(source="dir", path=str(csv_path), classes=["NORMAL", "PNEUMONIA"])
        try:
            summary = sources.ingest_into(cfg, tmp / "raw")
            sources.write_account(summary, tmp / "reports")
        except DataError:
            pass  # unknown labels, a class without images: an error naming them, never a traceback
        else:  # what was written reads back: one line per image, one per skipped or renamed file
            assert len(manifest.read(tmp / "raw" / "manifest.csv")) == summary["images"]
            report = pd.read_csv(tmp / "reports" / "skipped.csv", keep_default_na=False)
            assert len(report) == len(summary["skipped"]) + len(summary["renamed"])
        assert sorted(p.name for p in tmp.iterdir() if not p.name.startswith(".")) in (
            ["data", "outside"], ["data", "outside", "raw", "reports"])
        assert (tmp / "outside" / "secret.png").stat().st_nlink == 1  # never hard-linked into data/raw


@pytest.fixture(scope="module")
def predict_bundle(tiny_model_dir):
    from components.core.registry import registry

    return registry.load(str(tiny_model_dir))


@INPUT_FUZZ
@given(case=hostile_csv(), as_folder=st.booleans())
def test_predict_accounts_for_every_input_and_reads_nothing_outside(predict_bundle, case, as_folder):
    import pandas as pd

    from serving import predict

    files, rows, dialect = case
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data, csv_path, escapes = build_csv(tmp, files, rows, dialect)
        if as_folder:
            csv_path.unlink()
        summary = predict.run(predict_bundle, data if as_folder else csv_path, tmp / "preds.csv", workers=1)
        out = pd.read_csv(tmp / "preds.csv", keep_default_na=False, encoding="utf-8")  # always written, UTF-8
        assert len(out) == summary["images"] and summary["predicted"] == (out["predicted_label"] != "").sum()
        if as_folder:  # the link leading out is skipped, never read
            assert "zz-out.png" not in set(out["path"])
            assert any(s["path"] == "zz-out.png" for s in summary["skipped"]["examples"]) or \
                summary["skipped"]["count"] > 10
        else:
            assert len(out) == len(rows) + 2  # one output row per CSV row, in order
            for escaped, (_, row) in zip(escapes, out.iterrows(), strict=True):
                if escaped:
                    assert row["predicted_label"] == "" and row["error"].split(":")[0] in (
                        "outside_root", "link_outside_data_folder", "malformed_row")
        code, line = predict.outcome(summary)
        assert code in (0, 4, 7) and line


# ---------------------------------------------------------------- stored names (issue 32)
NAME_VARIANTS = ("as_is", "upper", "lower", "nfd", "nfc", "backslash", "long", "latin1")


def _variant(base: str, how: str) -> bytes:
    """A file name (bytes, with .png) made from ``base``: its case and Unicode twins, a backslash, a name whose
    percent-encoded form passes 255 bytes, bytes that are not UTF-8."""
    if how == "latin1":
        return base.encode("latin-1", "replace") + b"\xe9.png"
    if how == "long":  # as long as the file system takes (250 bytes), cut anywhere (a character in two, too)
        return (base.encode("utf-8") * 250)[:250].replace(b"/", b"_") + b".png"
    name = {"as_is": base, "upper": base.upper(), "lower": base.lower(), "backslash": base + "\\x",
            "nfd": unicodedata.normalize("NFD", base), "nfc": unicodedata.normalize("NFC", base)}[how]
    return os.fsencode(name) + b".png"


tree_files = st.lists(
    st.tuples(st.sampled_from(["NORMAL", "PNEUMONIA", "normal", "Pneumonia "]),
              st.one_of(name_text, st.sampled_from(["Café", "straße", "Ǆ", "ﬁle", "Å", "\u00c5x"])),
              st.sampled_from(NAME_VARIANTS)),
    min_size=1, max_size=8)


@INPUT_FUZZ
@given(tree_files)
def test_tree_ingest_stores_every_image_under_a_name_any_checkout_keeps(entries):
    """Every image of a tree stored exactly once, under a name of at most 255 bytes, no two names that a
    case-insensitive or normalising file system would merge; every change of name a renamed row."""
    import pandas as pd

    from components.core.contract.params.data import DataConfig
    from components.core.data import manifest, sources
    from components.core.data.sources.base import safe_name

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        made: dict[bytes, tuple[str, bytes]] = {}  # content → (class folder, raw name)
        files = [("NORMAL", b"n.png"), ("PNEUMONIA", b"p.png")] + [(f, _variant(b, how)) for f, b, how in entries]
        for i, (folder, raw) in enumerate(files):
            path = os.path.join(os.fsencode(tmp / "src" / folder), raw)
            if os.path.exists(path) or raw.startswith(b"."):
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = encode(gray(40, 40, seed=100 + i))
            with open(path, "wb") as fh:
                fh.write(data)
            made[data] = (folder, raw)
        cfg = DataConfig(source="dir", path=str(tmp / "src"), classes=["NORMAL", "PNEUMONIA"])
        summary = sources.ingest_into(cfg, tmp / "raw")
        sources.write_account(summary, tmp / "reports")
        df = manifest.read(tmp / "raw" / "manifest.csv")
        assert len(df) == len(made)  # nothing merged, nothing lost
        keys = {unicodedata.normalize("NFC", p).casefold() for p in df["path"]}
        assert len(keys) == len(df)
        renamed = set(pd.read_csv(tmp / "reports" / "skipped.csv", keep_default_na=False)["path"])
        stored = set()
        for path, label in zip(df["path"], df["label"], strict=True):
            assert all(len(part.encode("utf-8")) <= 255 for part in path.split("/"))
            data = (tmp / "raw" / path).read_bytes()
            stored.add(data)
            _, raw = made[data]
            if path != f"{label}/{safe_name(os.fsdecode(raw))}":
                assert path in renamed, path
        assert stored == set(made)
