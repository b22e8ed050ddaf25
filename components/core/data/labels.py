"""Label normalisation and patient ids.

Labels pass through one alias table (case- and punctuation-insensitive), so ``covid``,
``COVID-19`` and ``Covid_19`` all become ``COVID19``. Patient ids come from a manifest column
when present, else from Kermany file names, else one patient per file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from components.core.contract.errors import DataError

# Keys are normalised with _key(): upper case, no spaces, dashes, underscores or dots.
BUILTIN_ALIASES: dict[str, str] = {
    "COVID": "COVID19",
    "COVID19": "COVID19",
    "SARSCOV2": "COVID19",
    "CORONAVIRUS": "COVID19",
    "NORMAL": "NORMAL",
    "HEALTHY": "NORMAL",
    "NOFINDING": "NORMAL",
    "PNEUMONIA": "PNEUMONIA",
    "BACTERIAL": "PNEUMONIA",
    "VIRAL": "PNEUMONIA",
    "BACTERIALPNEUMONIA": "PNEUMONIA",
    "VIRALPNEUMONIA": "PNEUMONIA",
}

_KERMANY_PERSON = re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE)
_KERMANY_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def _key(label: str) -> str:
    return re.sub(r"[\s\-_.]", "", str(label)).upper()


class LabelMap:
    """Maps raw labels to canonical class names (built-in aliases + ``data.label_aliases``)."""

    def __init__(self, classes: Iterable[str], aliases: Mapping[str, str] | None = None,
                 exclude: Iterable[str] = ()) -> None:
        self.classes = list(classes)
        table = dict(BUILTIN_ALIASES)
        table.update({_key(c): c for c in self.classes})
        table.update({_key(k): v for k, v in (aliases or {}).items()})
        self._table = table
        self._exclude = {_key(x) for x in exclude}

    def excluded(self, raw: str) -> bool:
        return _key(raw) in self._exclude or self._table.get(_key(raw), "\0") in self._exclude

    def normalise(self, raw: str) -> str | None:
        """Canonical label, or None when the label is unknown or not in the class set."""
        label = self._table.get(_key(raw))
        return label if label in self.classes else None

    def normalise_all(self, raw_labels: Iterable[str], where: str) -> list[str]:
        """Normalise every label; raise :class:`DataError` listing all unknown ones at once."""
        raw_labels = list(raw_labels)
        out, unknown = [], {}
        for raw in raw_labels:
            label = self.normalise(raw)
            if label is None:
                unknown[raw] = unknown.get(raw, 0) + 1
            out.append(label)
        if unknown:
            listed = ", ".join(f"{k!r} ({n} images)" for k, n in sorted(unknown.items()))
            raise DataError(
                f"{where}: labels not in data.classes {self.classes}: {listed}. "
                "Add them to data.classes, map them with data.label_aliases, or drop them with "
                "data.exclude_labels."
            )
        return out


def patient_from_filename(name: str) -> str | None:
    """Kermany naming: ``person123_bacteria_456.jpeg`` → ``person123``, ``IM-0123-0001`` → ``IM-0123``."""
    stem = name.rsplit("/", 1)[-1]
    for pattern in (_KERMANY_PERSON, _KERMANY_IM):
        m = pattern.match(stem)
        if m:
            return m.group(1)
    return None
