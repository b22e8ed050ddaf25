"""Class-folder trees: ``<CLASS>/…`` or ``train|val|test/<CLASS>/…``, under any wrapper folders.

Every file under the tree is either an entry or a skipped row with its reason. Symbolic links are
followed only while they stay inside the data folder (a link leading outside is reported, never
copied: DVC would cache and push whatever it points at); link loops are detected. Files beside the class
folders (at the root, in a wrapper folder, directly under ``train/``) are ``outside_class_folder``;
dot-named files (``.DS_Store``, AppleDouble ``._x.jpeg``, a hidden ``.scan.jpeg``) are ``hidden_file``; a
dot-named folder or ``__MACOSX`` is one ``hidden_folder`` row (path ending in ``/``) that counts its files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from components.core.contract.errors import DataError
from components.core.data.labels import LabelMap
from components.core.data.sources.base import (
    IGNORED_DIRS,
    RENAMED_DETAIL,
    SPLIT_NAMES,
    Entry,
    Scan,
    inside,
    renamed_reason,
    safe_name,
    shown,
)


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


def hidden_detail(name: str) -> str:
    """Why a dot-named file is not read, in words."""
    if name.startswith("._"):
        return f"AppleDouble file (macOS metadata of {shown(name[2:])}), not an image"
    if name == ".DS_Store":
        return "macOS folder metadata, not an image"
    if name.lower().endswith(accepted_suffixes()):
        return "a hidden (dot-named) image: rename it without the leading '.' to ingest it"
    return "a hidden (dot-named) file"


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def skip_hidden_folder(folder: Path, rel: str, scan: Scan) -> None:
    n = _count_files(folder)
    if n == 0:  # nothing in it to account for
        return
    what = "macOS archive metadata" if folder.name in IGNORED_DIRS else "a hidden (dot-named) folder"
    scan.skip(rel + "/", "hidden_folder", f"{what}: its {n} file(s) are not read")


def account_level(folder: Path, rel_to: Path, scan: Scan, reason: str, detail: str) -> None:
    """The files directly in ``folder`` (not in its sub-folders) and its hidden sub-folders, as skipped rows:
    ``reason`` for a visible file, ``hidden_file`` / ``hidden_folder`` for dot-named ones. Visible sub-folders
    are the caller's to scan (or to report, as :func:`visible_dirs` reports links leaving the data folder)."""
    for p in sorted(folder.iterdir()):
        rel = shown(p.relative_to(rel_to).as_posix())
        hidden = p.name.startswith(".")
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if hidden or p.name in IGNORED_DIRS:
                skip_hidden_folder(p, rel, scan)
            continue
        if hidden:
            scan.skip(rel, "hidden_file", hidden_detail(p.name))
        else:
            scan.skip(rel, reason, detail)


def account_all(folder: Path, rel_to: Path, scan: Scan, reason: str, detail: str) -> None:
    """Every file under ``folder`` (links not followed; a folder link is one row ending in ``/``) as skipped
    with ``reason``."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        here = Path(dirpath)
        for d in dirnames:
            if (here / d).is_symlink():
                scan.skip(shown((here / d).relative_to(rel_to).as_posix()) + "/", reason, detail)
        for name in sorted(filenames):
            scan.skip(shown((here / name).relative_to(rel_to).as_posix()), reason, detail)


def walk_files(folder: Path, scan: Scan, root: Path) -> Iterator[tuple[Path, str]]:
    """(file, destination path) under ``folder``; every file not yielded is recorded in ``scan.skipped``."""
    suffixes = accepted_suffixes()
    seen_dirs: set[str] = set()

    def unreadable(err: OSError) -> None:
        where = Path(err.filename) if err.filename else folder
        rel = shown(where.relative_to(root).as_posix()) if where.is_relative_to(root) else shown(str(where))
        scan.skip(rel + "/", "unreadable_folder", shown(f"{type(err).__name__}: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        here = Path(dirpath)
        if real in seen_dirs:  # a link loop (or two links to one folder): scan it once
            scan.skip(shown(here.relative_to(root).as_posix()) + "/", "link_loop", f"already scanned as {shown(real)}")
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        kept = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith(".") or d in IGNORED_DIRS:
                skip_hidden_folder(sub, shown(sub.relative_to(root).as_posix()), scan)
                continue
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
                scan.skip(rel, "hidden_file", hidden_detail(name))
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
                scan.renamed.append({"path": rel, "reason": renamed_reason(rel_raw), "detail": RENAMED_DETAIL})
            yield p, rel


def _scan_class_folders(base: Path, root: Path, scan: Scan, official_split: str = "") -> None:
    for folder in visible_dirs(base, root, scan):
        before = len(scan.entries)
        at = len(folder.relative_to(root).parts) - 1  # stored under the normalised label there
        for p, rel in walk_files(folder, scan, root):
            scan.entries.append(Entry(src=p, dest=rel, raw_label=folder.name, official_split=official_split,
                                      class_at=at))
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
    """Scan a class-folder tree, with an optional split level; every file under ``root`` is accounted for."""
    scan = Scan()
    base, layout = find_layout_root(root, labels)
    scan.layout = layout if base == root else f"{layout} (under {shown(base.relative_to(root).as_posix())}/)"
    wrapper = root
    for part in base.relative_to(root).parts:  # files beside the wrapper folders (paths relative to data.path)
        account_level(wrapper, root, scan, "outside_class_folder", f"beside the wrapper folder {shown(part)}/, "
                      "above the class folders")
        wrapper = wrapper / part
    # paths in the manifest are relative to the layout level, without wrapper folders
    level = "class folders" if layout == "class" else "train/val/test folders"
    account_level(base, base, scan, "outside_class_folder", f"beside the {level}, not in a class folder "
                  f"({', '.join(labels.classes)})")
    if layout == "class":
        _scan_class_folders(base, base, scan)
        return scan
    for split_dir in visible_dirs(base, root, scan):
        split = SPLIT_NAMES.get(split_dir.name.lower())
        if split is None:
            where = shown(split_dir.relative_to(root).as_posix())
            scan.warnings.append(f"ignored folder {where}/ (not train/val/test)")
            account_all(split_dir, base, scan, "outside_split_folders",
                        f"{shown(split_dir.name)}/ is not train/val/test")
            continue
        account_level(split_dir, base, scan, "outside_class_folder",
                      f"directly under {shown(split_dir.name)}/, not in a class folder")
        _scan_class_folders(split_dir, base, scan, official_split=split)
    return scan


def account_rest(base: Path, used: set[str], scan: Scan, reason: str, detail: str) -> None:
    """Record every file under ``base`` outside the entries named in ``used`` (top-level names) as
    skipped with ``reason``: a named layout reads only its own files and folders, and says so."""
    for p in sorted(base.iterdir()):
        if p.name in used:
            continue
        if p.name.startswith(".") or p.name in IGNORED_DIRS:
            if p.is_dir():
                skip_hidden_folder(p, shown(p.name), scan)
            else:
                scan.skip(shown(p.name), "hidden_file", hidden_detail(p.name))
            continue
        if p.is_dir():
            for _, rel in walk_files(p, scan, base):  # non-image names are recorded as such
                scan.skip(rel, reason, detail)
        else:
            scan.skip(safe_name(p.name), reason, detail)
