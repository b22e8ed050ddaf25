"""The ``params.yaml`` sections, in the file's order (``validate`` is ``Params.validate_`` in Python).

A module of its own, with no schema in it: every step spec orders its sections by it, so every DVC stage depends
on this file and on nothing else of the params code but the sections it reads. ``schema.Params`` checks its
fields against it when imported.
"""

SECTIONS: tuple[str, ...] = ("data", "validate", "split", "preprocess", "train", "mlflow", "evaluate", "gate",
                             "registry", "monitor", "scale", "review")


def module(section: str) -> str:
    """The module that holds a section's schema (``mlflow`` is ``tracking``: a module named ``mlflow`` would shadow
    the library)."""
    if section not in SECTIONS:
        raise KeyError(f"unknown params section {section!r} (sections: {', '.join(SECTIONS)})")
    return "components.core.contract.params." + {"mlflow": "tracking"}.get(section, section)
