"""Batch prediction: a file, a folder or a CSV of images → ``preds.csv``, every input accounted for.

Columns: ``path,predicted_label,prob_<CLASS>…,positive_<CLASS>…,ood_score,unlike_training_data,error,note``
(``ood_score``/``unlike_training_data``: the out-of-distribution score and flag of :mod:`components.core.model.ood`,
empty for a model without a reference). One row per input; an input that got no prediction has its reason in
``error`` (``reason: detail``) and empty probabilities, and never stops the batch. ``note`` names what was
done anyway: ``non_utf8_name`` / ``control_character_name`` (a name whose bytes are not UTF-8, or holding a
control character such as a line break, is written percent-encoded, ``%FF``, as ingest stores it) and
decoder warnings such as ``multi_frame: 3 frames, frame 0 used``.

Images go through the decoder validate uses, with validate's limits (``limits``: min/max side, max pixels,
transparent share, pixel standard deviation; the CLI passes :func:`limits_for`) and its strictness, so an image
validate would quarantine (a 1×1 thumbnail, a 9000×9000 scan, a multi-frame DICOM, a JPEG whose data libjpeg
calls corrupt, a film half transparent, a blank film, a float film with NaN pixels) gets ``error`` naming the
limit instead of a prediction. DICOM files (``.dcm`` or any name given explicitly) are read too; the error
text never carries identifying DICOM values.

Inputs: a regular file; a folder (read as ingest reads a class folder: image names only, links leaving the
folder and hidden files skipped, each listed in ``<output>.skipped.csv`` as ``path,reason,detail``, the
summary's ``skipped`` counting them); or a CSV with a ``path`` column, read as ingest reads a CSV manifest (BOM,
CRLF, quoting, ``;``/tab separators, bytes that are not UTF-8, ``a\\b.png`` read as ``a/b.png`` when no file has
the literal name: ``note`` says ``backslash_path``), whose paths are resolved against the CSV's folder and must
stay inside ``root`` (default: that folder): ``../``, an absolute path elsewhere (``outside_root``) or a link
leading out (``link_outside_data_folder``) is refused without opening the file. Every CSV row gets a row in the
output. A FIFO, device or socket given as ``--input`` is refused unopened (a FIFO would block, ``/dev/zero``
never ends); a file over serve's upload limit (``CXR_MAX_UPLOAD_BYTES``, 20 MiB) is ``too_large`` from its
size, before it is read. Any failure to read or decode a file is that row's ``error`` (``out_of_memory`` for a
MemoryError), never a traceback.

**Streamed**: rows are appended to ``<output>.partial`` batch by batch and flushed; the file is renamed to
``<output>`` when every input has its row. An interrupted or failed run leaves ``<output>`` as it was and the
rows written so far in ``<output>.partial``.

**Outcome** (:func:`outcome`): ``ok`` when every input got a prediction (exit 0), ``none`` when none did (exit
4), ``partial`` otherwise (exit 7): the CLI prints one summary line on stderr either way.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core.contract.errors import EXIT_DATA, EXIT_OK, EXIT_PARTIAL, DataError
from components.core.data.images import Limits, load_files
from components.core.data.sources.base import RENAMED_DETAIL, Scan, inside, renamed_reason, safe_name, shown
from components.core.model.bundle import ModelBundle

log = logging.getLogger(__name__)


def _note(raw: str) -> str:
    return f"{renamed_reason(raw)}: {RENAMED_DETAIL.replace('stored', 'written')}"


@dataclass
class Input:
    """One input: the path as shown in the output, the file to read (None when refused before reading), the
    refusal, a note."""

    shown: str
    file: Path | None
    error: str = ""
    note: str = ""


def _named(raw: str) -> tuple[str, str]:
    name = safe_name(raw)
    return name, (_note(raw) if name != raw else "")


def _within(path: str, roots: tuple[str, ...]) -> bool:
    for root in roots:
        rel = os.path.relpath(path, root)
        if not (rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel)):
            return True
    return False


def _from_folder(src: Path, skipped: list[dict]) -> list[Input]:
    from components.core.data.sources.folder import walk_files

    scan = Scan()
    out = []
    for p, rel in walk_files(src, scan, src):
        raw = p.relative_to(src).as_posix()
        out.append(Input(rel, p, note=_note(raw) if rel != raw else ""))
    skipped.extend(scan.skipped)
    return out


def _from_csv(src: Path, root: Path) -> list[Input]:
    from components.core.data.sources.table import locate, read_rows

    try:
        data = src.read_bytes()
    except OSError as err:
        raise DataError(f"{src}: cannot read the CSV: {err.strerror or err}") from None
    header, rows, bad = read_rows(data, str(src))
    if "path" not in header:
        raise DataError(f"{src}: the CSV needs a 'path' column (its header has {[safe_name(h) for h in header]})")
    if not root.is_dir():
        raise DataError(f"--root {root} is not a folder")
    roots = (os.path.abspath(root), str(root.resolve()))
    items: list[tuple[int, Input]] = [(line, Input(f"{src.name}:{line}", None, f"malformed_row: {problem}"))
                                      for line, problem in bad]
    for line, row in rows:
        rel = row["path"]
        name, note = _named(rel)
        if not rel.strip():
            items.append((line, Input(f"{src.name}:{line}", None, f"empty_path: line {line} has no path")))
            continue
        if "\0" in rel:
            items.append((line, Input(name, None, "bad_path: the path contains a NUL character", note)))
            continue
        p, resolved = locate(src.parent, rel)  # a\b.png is a/b.png unless a file has the literal name
        if resolved != rel:
            note = "; ".join(filter(None, [note, f"backslash_path: read as {safe_name(resolved)}"]))
        if not _within(os.path.abspath(p), roots):
            items.append((line, Input(name, None, f"outside_root: {name} resolves outside {shown(root)} "
                                                  "(--root); the file was not opened", note)))
            continue
        try:
            real = p.resolve(strict=True)
            if not real.is_file():
                raise OSError("not a regular file")
        except FileNotFoundError:
            items.append((line, Input(name, None, f"missing_file: line {line}: no such file", note)))
            continue
        except (OSError, RuntimeError, ValueError) as err:
            items.append((line, Input(name, None, f"unreadable_link_or_file: {shown(str(err))}", note)))
            continue
        if not inside(real, root):
            items.append((line, Input(name, None, f"link_outside_data_folder: the link points outside "
                                                  f"{shown(root)} (--root)", note)))
            continue
        items.append((line, Input(name, p, "", note)))
    return [i for _, i in sorted(items, key=lambda t: t[0])]


def list_inputs(input_path: str | Path, root: str | Path | None = None,
                skipped: list[dict] | None = None) -> list[Input]:
    """One :class:`Input` per input image (per CSV row); files of a folder that are not inputs (hidden, not an
    image name, a link leaving the folder) go to ``skipped`` with their reason."""
    src = Path(input_path)
    if not src.exists():
        raise DataError(f"--input {shown(src)} does not exist (an image, a folder of images, or a CSV with a path "
                        "column)")
    if not src.is_dir() and not src.is_file():  # never opened: a FIFO would block, /dev/zero never ends
        raise DataError(f"--input {shown(src)} is neither a regular file nor a folder (a FIFO, device or socket): "
                        "give an image, a folder of images, or a CSV with a path column")
    if src.is_dir():
        return _from_folder(src, skipped if skipped is not None else [])
    if src.suffix.lower() != ".csv":
        name, note = _named(src.name)
        return [Input(name, src, note=note)]
    return _from_csv(src, Path(root) if root else src.parent)


def predict_with_ood(bundle: ModelBundle, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, OOD scores or None) for uint8 images (N × S × S or N × S × S × 1), in batches."""
    if len(x) == 0:
        return np.zeros((0, len(bundle.classes)), np.float32), (np.zeros(0) if bundle.ood is not None else None)
    x = x[..., None] if x.ndim == 3 else x
    parts = [bundle.infer_ood(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    probs = np.concatenate([p for p, _ in parts])
    return probs, (np.concatenate([s for _, s in parts]) if bundle.ood is not None else None)


def outcome(summary: dict) -> tuple[int, str]:
    """(exit code, one summary line) for a finished run: 0 when every input got a prediction, 4 when none
    did, 7 (partial) when some did not."""
    n, done = summary["images"], summary["predicted"]
    code = EXIT_OK if n and done == n else (EXIT_DATA if done == 0 else EXIT_PARTIAL)
    state = {EXIT_OK: "ok", EXIT_DATA: "none predicted", EXIT_PARTIAL: "partial"}[code]
    why = ", ".join(f"{k} {v}" for k, v in sorted(summary["refused"].items()))
    line = f"{done} of {n} inputs predicted" + (f", {n - done} refused ({why})" if done < n else "")
    if summary["renamed"]:
        line += f", {summary['renamed']} names percent-encoded (not UTF-8, or control characters)"
    if summary["skipped"]["count"]:
        line += (f"; {summary['skipped']['count']} files not read ({dict(summary['skipped']['by_reason'])}, each "
                 f"listed in {shown(summary['skipped'].get('file') or skipped_path(summary['output']))})")
    return code, f"{line} → {summary['output']} (exit {code}: {state})"


def _row_writer(fh, bundle: ModelBundle):
    flags = [f"positive_{c}" for c in bundle.thresholds]
    columns = ["path", "predicted_label", *[f"prob_{c}" for c in bundle.classes], *flags, "ood_score",
               "unlike_training_data", "error", "note"]
    writer = csv.DictWriter(fh, columns, lineterminator="\n")
    writer.writeheader()
    return writer


def _fmt(value) -> str:
    return "" if value is None else str(value)


def skipped_path(output: str | Path) -> Path:
    """Where the files of a folder input that were not read are listed: ``<output>.skipped.csv``."""
    output = Path(output)
    return output.with_name(output.name + ".skipped.csv")


def _write_skipped(path: Path, skipped: list[dict]) -> None:
    import io

    from components.core.contract.fsutil import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["path", "reason", "detail"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(skipped)
    write_text(path, buf.getvalue())


def limits_for(validate) -> Limits:
    """Validate's limits (``params.validate_``) and serve's upload limit (``CXR_MAX_UPLOAD_BYTES``) per file."""
    from components.core.data.images import DEFAULT_MAX_BYTES

    raw = os.environ.get("CXR_MAX_UPLOAD_BYTES", "")
    try:
        max_bytes = int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        raise DataError(f"CXR_MAX_UPLOAD_BYTES={raw!r} is not a whole number of bytes") from None
    return Limits.from_config(validate, max_bytes=max_bytes)


def run(bundle: ModelBundle, input_path: str | Path, output: str | Path, root: str | Path | None = None,
        batch_size: int = 64, workers: int | None = None, limits: Limits | None = None) -> dict:
    """Predict every input image, streaming the rows (see the module docstring); ``limits`` default to
    validate's defaults (:class:`Limits`). Returns the summary; :func:`outcome` gives its exit code."""
    from concurrent.futures import ProcessPoolExecutor

    limits = limits or Limits()
    skipped: list[dict] = []
    items = list_inputs(input_path, root, skipped)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    workers = workers or min(2, os.cpu_count() or 1)
    block = max(batch_size, 64) * max(1, workers)
    predicted, refused, flagged, noted = 0, Counter(), 0, 0
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(items) >= 32 else None
    try:
        with partial.open("w", encoding="utf-8", newline="") as fh:
            writer = _row_writer(fh, bundle)
            for start in range(0, len(items), block):
                chunk = items[start:start + block]
                todo = [k for k, it in enumerate(chunk) if it.file is not None and not it.error]
                loaded = load_files([str(chunk[k].file) for k in todo], bundle.image_size, bundle.resize, limits,
                                    workers=workers, desc="predict", pool=pool)
                good = [(k, got) for k, got in zip(todo, loaded, strict=True) if got.pixels is not None]
                errors = {k: got.error for k, got in zip(todo, loaded, strict=True) if got.pixels is None}
                warned = {k: got.warnings for k, got in zip(todo, loaded, strict=True) if got.warnings}
                x = np.stack([g.pixels for _, g in good]) if good else np.zeros((0, 1, 1), np.uint8)
                proba, scores = predict_with_ood(bundle, x, batch_size)
                results = {k: j for j, (k, _) in enumerate(good)}
                for k, it in enumerate(chunk):
                    row = {"path": it.shown, "error": it.error or errors.get(k, ""),
                           "note": "; ".join(filter(None, [it.note, warned.get(k, "")]))}
                    noted += it.note.startswith(("non_utf8_name", "control_character_name"))
                    if k in results:
                        j = results[k]
                        p = proba[j]
                        row["predicted_label"] = bundle.classes[int(np.argmax(p))]
                        row.update({f"prob_{c}": round(float(v), 6) for c, v in zip(bundle.classes, p, strict=True)})
                        row.update({f"positive_{c}": d for c, d in bundle.decide(p).items()})
                        if scores is not None:
                            row["ood_score"] = round(float(scores[j]), 4)
                            row["unlike_training_data"] = bundle.ood.flag(scores[j])
                            flagged += row["unlike_training_data"] is True
                        predicted += 1
                    else:
                        refused[row["error"].split(":", 1)[0] or "error"] += 1
                    writer.writerow({k2: _fmt(v) for k2, v in row.items()})
                fh.flush()
        os.chmod(partial, 0o644)
        _write_skipped(skipped_path(output), skipped)
        os.replace(partial, output)
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            pool = None
        if partial.exists():
            log.warning("stopped after %d of %d inputs: the rows written so far are in %s; %s is unchanged",
                        predicted + sum(refused.values()), len(items), shown(partial), shown(output))
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    reasons = Counter(s["reason"] for s in skipped)
    return {"output": str(output), "images": len(items), "predicted": predicted, "errors": len(items) - predicted,
            "refused": dict(refused), "renamed": noted,
            "skipped": {"count": len(skipped), "by_reason": dict(reasons), "examples": skipped[:10],
                        "file": str(skipped_path(output))},
            "unlike_training_data": flagged if bundle.ood is not None else None,
            "model": bundle.describe() | {"metrics": None}}
