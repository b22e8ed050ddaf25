"""Class-folder trees: ``<CLASS>/…`` or ``train|val|test/<CLASS>/…``, under any wrapper folders.

Every file under the tree is either an entry or a skipped row with its reason. Symbolic links are
followed only while they stay inside the data folder (a link leading outside is reported, never
copied: DVC would cache and push whatever it points at); link loops are detected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from components.core.contract.errors import DataError
from components.core.data.labels import LabelMap
from components.core.data.sources.base import IGNORED_DIRS, SPLIT_NAMES, Entry, Scan, inside, safe_name, shown


def accepted_suffixes() -> tuple[str, ...]:
    from components.core.data.images import IMAGE_SUFFIXES

    return tuple(IMAGE_SUFFIXES)


def visible_dirs(path: Path, root: Path, scan: Scan | None = None) -> list[Path]:
    """Sub-folders worth scanning: not hidden, not ``__MACOSX``; links only when they stay inside ``root``."""
    out = []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or p.name in IGNORED_DIRS:
            continue
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            continue
        if p.is_symlink() and not inside(p, root):
            if scan is not None:
                scan.skip(shown(p.relative_to(root).as_posix()) + "/", "link_outside_data_folder",
                          f"the folder link points outside {shown(root)}; copy the files in instead")
            continue
        out.append(p)
    return out


def walk_files(folder: Path, scan: Scan, root: Path) -> Iterator[tuple[Path, str]]:
    """(file, destination path) under ``folder``; every file not yielded is recorded in ``scan.skipped``."""
    suffixes = accepted_suffixes()
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        here = Path(dirpath)
        if real in seen_dirs:  # a link loop (or two links to one folder): scan it once
            scan.skip(shown(here.relative_to(root).as_posix()) + "/", "link_loop", f"already scanned as {shown(real)}")
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        kept = []
        for d in sorted(dirnames):
            if d.startswith(".") or d in IGNORED_DIRS:
                continue
            sub = here / d
            if sub.is_symlink() and not inside(sub, root):
                scan.skip(shown(sub.relative_to(root).as_posix()) + "/", "link_outside_data_folder",
                          f"the folder link points outside {shown(root)}; copy the files in instead")
                continue
            target = os.path.realpath(sub)
            if sub.is_symlink() and (real == target or real.startswith(target + os.sep)):
                scan.skip(shown(sub.relative_to(root).as_posix()) + "/", "link_loop",
                          f"the folder link points back to {shown(target)}, which contains it")
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            p = here / name
            rel_raw = p.relative_to(root).as_posix()
            rel = safe_name(rel_raw)
            if name.startswith("."):
                continue
            if not name.lower().endswith(suffixes):
                scan.skip(rel, "not_an_image_name", f"extension not in {', '.join(suffixes)}")
                continue
            try:
                if not p.resolve(strict=True).is_file():
                    raise OSError("not a regular file")
            except (OSError, RuntimeError) as err:
                scan.skip(rel, "unreadable_link_or_file", str(err))
                continue
            if p.is_symlink() and not inside(p, root):
                scan.skip(rel, "link_outside_data_folder",
                          f"the link points outside {shown(root)}; copy the file in instead")
                continue
            if rel != rel_raw:
                scan.renamed.append({"path": rel, "reason": "non_utf8_name",
                                     "detail": "bytes that are not UTF-8 are stored as %XX"})
            yield p, rel


def _scan_class_folders(base: Path, root: Path, scan: Scan, official_split: str = "") -> None:
    for folder in visible_dirs(base, root, scan):
        before = len(scan.entries)
        for p, rel in walk_files(folder, scan, root):
            scan.entries.append(Entry(src=p, dest=rel, raw_label=folder.name, official_split=official_split))
        if len(scan.entries) == before:
            scan.warnings.append(f"class folder {shown(folder.relative_to(root).as_posix())}/ has no images")


def _looks_like_class(name: str, labels: LabelMap) -> bool:
    return labels.normalise(name) is not None or labels.excluded(name)


def descend(root: Path, is_base: Callable[[Path], bool], depth: int = 6) -> Path | None:
    """The first folder, from ``root`` down through single wrapper folders (as zips have), for which
    ``is_base`` holds; None when there is none."""
    current = root
    for _ in range(depth):
        if is_base(current):
            return current
        dirs = visible_dirs(current, root)
        if len(dirs) != 1:
            return None
        current = dirs[0]
    return None


def find_layout_root(root: Path, labels: LabelMap) -> tuple[Path, str]:
    """Descend through single wrapper folders (as Kaggle zips have) to the split or class level."""
    current = root
    for _ in range(6):
        dirs = visible_dirs(current, root)
        names = [d.name for d in dirs]
        if any(n.lower() in SPLIT_NAMES for n in names):
            return current, "split"
        if any(_looks_like_class(n, labels) for n in names):
            return current, "class"
        if len(dirs) != 1:
            break
        current = dirs[0]
    found = ", ".join(shown(d.name) for d in visible_dirs(root, root)) or "nothing"
    raise DataError(
        f"{root}: cannot find class folders. Expected <CLASS>/ or train|val|test/<CLASS>/ folders "
        f"(classes {labels.classes}), or a MANIFEST.csv; found folders: {found}"
    )


def scan_tree(root: Path, labels: LabelMap) -> Scan:
    """Scan a class-folder tree, with an optional split level."""
    scan = Scan()
    base, layout = find_layout_root(root, labels)
    scan.layout = layout if base == root else f"{layout} (under {shown(base.relative_to(root).as_posix())}/)"
    # paths in the manifest are relative to the layout level, without wrapper folders
    if layout == "class":
        _scan_class_folders(base, base, scan)
        return scan
    for split_dir in visible_dirs(base, root, scan):
        split = SPLIT_NAMES.get(split_dir.name.lower())
        if split is None:
            where = shown(split_dir.relative_to(root).as_posix())
            scan.warnings.append(f"ignored folder {where}/ (not train/val/test)")
            for _, rel in walk_files(split_dir, Scan(), base):
                scan.skip(rel, "outside_split_folders", f"{split_dir.name}/ is not train/val/test")
            continue
        _scan_class_folders(split_dir, base, scan, official_split=split)
    return scan


def account_rest(base: Path, used: set[str], scan: Scan, reason: str, detail: str) -> None:
    """Record every file under ``base`` outside the entries named in ``used`` (top-level names) as
    skipped with ``reason``: a named layout reads only its own files and folders, and says so."""
    for p in sorted(base.iterdir()):
        if p.name.startswith(".") or p.name in IGNORED_DIRS or p.name in used:
            continue
        if p.is_dir():
            for _, rel in walk_files(p, scan, base):  # non-image names are recorded as such
                scan.skip(rel, reason, detail)
        else:
            scan.skip(safe_name(p.name), reason, detail)
