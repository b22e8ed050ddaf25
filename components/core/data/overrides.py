"""Label decisions as versioned data: ``data/label_overrides.csv``, which ingest applies.

One line per image, keyed by the image's sha256 (so a decision follows the image whatever its path)::

    sha256,action,label,status,who,when,why,path

* ``action``: ``relabel`` (to ``label``, one of ``data.classes``), ``exclude`` (the image is dropped, and
  listed in the ingest report with the reason) or ``keep`` (a person checked the image and its label is right:
  nothing changes; ``label`` records the label that was kept, and the review page does not ask again);
* ``status``: ``proposed`` (written by ``cxr review-labels --accept N``: nothing changes) or ``confirmed`` (a
  person read the image and agrees: ingest applies it). The review page (``cxr review-labels serve``,
  :func:`decide`) writes confirmed lines itself; by hand, confirming is editing the line: ``status:
  confirmed``, ``who``: your name; change ``action``/``label`` when you disagree with the proposal;
* ``who``, ``why``: who decided and why (required); ``when``: the UTC time of the decision (ISO 8601; may be
  empty, and files from before it had the column are read as they are); ``path``: where the image was when the
  line was written (for people; matching is by sha256).

Nothing changes a label without a confirmed line here. The file is in git and a dependency of DVC's ingest
stage, so a decision re-runs the pipeline from ingest and every model's data version records it; ingest's
summary (and the model card) count what was applied, and list each confirmed line that matched no ingested
image with its line number (``label_overrides.unmatched_lines``). :func:`apply` adds ``label_before_override``
to the manifest rows it relabels.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from components.core.contract.errors import DataError

log = logging.getLogger(__name__)

COLUMNS = ["sha256", "action", "label", "status", "who", "when", "why", "path"]
OPTIONAL = ("when",)  # a file written before the column existed is read with it empty
ACTIONS = ("relabel", "exclude", "keep")
STATUSES = ("proposed", "confirmed")
BEFORE = "label_before_override"
PROPOSER = "cxr review-labels"
LINE = "line"  # the file's line number of each decision (1 is the header), added by :func:`read`
_SHA = re.compile(r"^[0-9a-f]{64}$")


def empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def read(path: str | Path, classes: list[str] | None = None) -> pd.DataFrame:
    """The overrides file, checked line by line: a bad line is a :class:`DataError` naming the file, the line
    and what to write instead."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label overrides file not found (create it with the header line "
                        f"'{','.join(COLUMNS)}', or point --label-overrides elsewhere)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV: {err}") from None
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: lacks column(s) {missing}; the header must be '{','.join(COLUMNS)}'")
    problems = line_problems(df, str(path), classes)
    df["sha256"] = df["sha256"].str.strip().str.lower()
    dup = df["sha256"][df["sha256"].duplicated()]
    if len(dup):
        problems.append(f"{path}: sha256 {sorted(set(dup))[:3]} appear on more than one line: one decision per image")
    if problems:
        raise DataError("invalid label overrides:\n  " + "\n  ".join(problems[:20])
                        + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""))
    out = df[COLUMNS].copy()
    out[LINE] = range(2, len(out) + 2)
    return out


def line_problems(df: pd.DataFrame, where: str, classes: list[str] | None = None) -> list[str]:
    """What is wrong with each line of ``df`` (the file's rows; line 1 is the header), as ``where:line: …``."""
    problems = []
    for i, r in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        at = f"{where}:{i}"
        if not _SHA.match(r.sha256.strip().lower()):
            problems.append(f"{at}: sha256 {r.sha256!r} is not 64 hex digits")
        if r.action not in ACTIONS:
            problems.append(f"{at}: action {r.action!r} must be one of {list(ACTIONS)}")
        if r.status not in STATUSES:
            problems.append(f"{at}: status {r.status!r} must be one of {list(STATUSES)}")
        if r.action == "relabel" and (not r.label or (classes is not None and r.label not in classes)):
            problems.append(f"{at}: relabel needs a label among {classes or 'data.classes'}, got {r.label!r}")
        if r.action == "exclude" and r.label:
            problems.append(f"{at}: exclude takes no label (got {r.label!r}); leave it empty")
        if r.action == "keep" and r.label and classes is not None and r.label not in classes:
            problems.append(f"{at}: keep records the label kept, one of {classes}, got {r.label!r}")
        if not r.why.strip():
            problems.append(f"{at}: why is empty: say why the label is wrong")
        if r.status == "confirmed" and (not r.who.strip() or r.who.strip() == PROPOSER):
            problems.append(f"{at}: a confirmed line needs who: the person who confirmed it (not {PROPOSER!r})")
    return problems


def file_sha256(read_bytes: Callable[[str], bytes], path: str) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


def apply(rows: pd.DataFrame, overrides: pd.DataFrame, read_bytes: Callable[[str], bytes],
          source: str) -> tuple[pd.DataFrame, list[dict], dict]:
    """Apply the confirmed lines to manifest ``rows`` (``read_bytes(path)`` gives an image's bytes, hashed only
    when some line is confirmed). Returns (rows, skipped entries for the excluded images, a summary)."""
    confirmed = overrides[overrides["status"] == "confirmed"]
    changing = confirmed[confirmed["action"] != "keep"]  # a kept label changes nothing
    summary = {"file": source, "lines": len(overrides),
               "proposed_pending": int((overrides["status"] == "proposed").sum()),
               "confirmed": {a: int((confirmed["action"] == a).sum()) for a in ACTIONS},
               "relabelled": 0, "excluded": 0, "unmatched": 0, "unmatched_lines": [], "relabelled_by_class": {}}
    if confirmed.empty:  # (only kept labels: nothing changes, but a kept line that matches nothing is still named)
        return rows, [], summary
    sha = rows["path"].map(lambda p: file_sha256(read_bytes, p))
    decided = changing.set_index("sha256")
    hit = sha.isin(decided.index)
    unmatched = confirmed[~confirmed["sha256"].isin(set(sha))]
    summary["unmatched"] = len(unmatched)
    summary["unmatched_lines"] = [
        {"line": int(r[LINE]) if LINE in unmatched else None, "sha256": r["sha256"], "action": r["action"],
         "path": r["path"]} for _, r in unmatched.iterrows()]
    out = rows.copy()
    out[BEFORE] = ""
    skipped: list[dict] = []
    drop = []
    for i in out.index[hit]:
        line = decided.loc[sha[i]]
        if line["action"] == "exclude":
            drop.append(i)
            skipped.append({"path": out.at[i, "path"], "reason": "label_override_excluded",
                            "detail": f"excluded by {line['who']}: {line['why']}"})
        elif line["label"] != out.at[i, "label"]:
            key = f"{out.at[i, 'label']}->{line['label']}"
            summary["relabelled_by_class"][key] = summary["relabelled_by_class"].get(key, 0) + 1
            out.at[i, BEFORE] = out.at[i, "label"]
            out.at[i, "label"] = line["label"]
    summary["relabelled"] = int(sum(summary["relabelled_by_class"].values()))
    summary["excluded"] = len(drop)
    out = out.drop(index=drop)
    if summary["unmatched"]:
        lines = ", ".join(str(u["line"]) for u in summary["unmatched_lines"][:20])
        more = f" and {summary['unmatched'] - 20} more" if summary["unmatched"] > 20 else ""
        log.warning("%s: %d confirmed lines match no ingested image (another data set, or the image changed): "
                    "line %s%s (listed under label_overrides.unmatched_lines in the ingest summary)",
                    source, summary["unmatched"], lines, more)
    log.info("label overrides %s: %d relabelled, %d excluded, %d proposals awaiting confirmation", source,
             summary["relabelled"], summary["excluded"], summary["proposed_pending"])
    return out.reset_index(drop=True), skipped, summary


def propose(path: str | Path, suspects: pd.DataFrame, n: int, when: str) -> dict:
    """Append the top ``n`` suspects (rank order) whose image has no line yet to the overrides file as
    ``proposed`` relabels to the suggested label (created with its header when missing). Returns counts."""
    from components.core.contract.fsutil import write_text

    path = Path(path)
    current = read(path) if path.is_file() else empty()
    if "sha256" not in suspects.columns or (suspects["sha256"].astype(str).str.len() != 64).any():
        raise DataError("the suspects have no sha256 (the review ran on shards made without validate): run the "
                        "pipeline through validate, then cxr review-labels")
    fresh = suspects[~suspects["sha256"].isin(set(current["sha256"]))].head(n)
    lines = pd.DataFrame({
        "sha256": fresh["sha256"], "action": "relabel", "label": fresh["suggested_label"], "status": "proposed",
        "who": PROPOSER, "when": "",
        "why": [f"review {when}: rank {int(r.rank)}, p({r.given_label})={float(r.score):.3f} out of fold; the model "
                f"suggests {r.suggested_label}" for r in fresh.itertuples()],
        "path": fresh["path"]})
    out = pd.concat([current, lines], ignore_index=True)[COLUMNS]
    write_text(path, out.to_csv(index=False, lineterminator="\n"))
    return {"overrides": str(path), "proposed": len(lines),
            "suspects_already_listed": int(suspects["sha256"].isin(set(current["sha256"])).sum()),
            "lines": len(out), "next": f"read each proposed image (gallery.html), set status: confirmed and who: "
                                      f"<your name> in {path} (or change action/label), then dvc repro"}


def utc_now() -> str:
    """The time of a decision: UTC, ISO 8601 to the second (``2026-12-06T14:03:59Z``)."""
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(path: str | Path, df: pd.DataFrame) -> None:
    """Write the overrides file (every column, in order) atomically: a temporary file, then a rename."""
    from components.core.contract.fsutil import write_text

    write_text(path, df[COLUMNS].to_csv(index=False, lineterminator="\n"))  # temp file + rename


def decide(path: str | Path, sha256: str, action: str, label: str, who: str, why: str, image_path: str,
           classes: list[str] | None = None, when: str | None = None) -> tuple[dict | None, dict]:
    """Write a person's decision on one image as a ``confirmed`` line (replacing the image's line, proposed or
    not; appended otherwise), atomically. Returns (the line it replaced or None, the line written): what
    :func:`restore` needs to undo it. The file is read fresh, so lines edited by hand meanwhile are kept."""
    path = Path(path)
    current = read(path, classes) if path.is_file() else empty()
    line = {"sha256": sha256.strip().lower(), "action": action, "label": label if action != "exclude" else "",
            "status": "confirmed", "who": who.strip(), "when": when or utc_now(), "why": why.strip(),
            "path": image_path}
    check = pd.DataFrame([line], columns=COLUMNS)
    problems = line_problems(check, "the decision", classes)
    if problems:
        raise DataError("; ".join(problems))
    hit = current.index[current["sha256"] == line["sha256"]]
    previous = current.loc[hit[0]].to_dict() if len(hit) else None
    if len(hit):
        current.loc[hit[0], COLUMNS] = [line[c] for c in COLUMNS]
        out = current
    else:
        out = pd.concat([current, check], ignore_index=True)
    write(path, out)
    return previous, line


def restore(path: str | Path, sha256: str, previous: dict | None, classes: list[str] | None = None) -> None:
    """Undo :func:`decide`: put ``previous`` back as the image's line, or remove its line when there was none."""
    path = Path(path)
    current = read(path, classes)
    sha256 = sha256.strip().lower()
    hit = current.index[current["sha256"] == sha256]
    if previous is None:
        out = current.drop(index=hit)
    elif len(hit):
        current.loc[hit[0], COLUMNS] = [previous.get(c, "") for c in COLUMNS]
        out = current
    else:
        out = pd.concat([current, pd.DataFrame([previous], columns=COLUMNS)], ignore_index=True)
    write(path, out.reset_index(drop=True))

