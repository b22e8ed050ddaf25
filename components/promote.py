"""Promote and roll back: move the ``champion`` alias, keeping the old one as ``previous-champion``.

Only a version tagged with a passed gate can become champion. Aliases are single-valued in the
registry, so two promotions racing leave ``champion`` on exactly one passed version (the last
writer wins).
"""

from __future__ import annotations

from components.core import registry, tracking
from components.core.config import Params
from components.core.errors import CxrError


def _resolve(name: str, version: str | None, alias: str | None):
    if version:
        return registry.get_version(name, version)
    mv = registry.version_by_alias(name, alias or registry.CHALLENGER)
    if mv is None:
        raise CxrError(f"model {name} has no alias {alias or registry.CHALLENGER!r}: register a model first "
                       "(`cxr register`) or pass --version")
    return mv


def promote(params: Params, version: str | None = None, alias: str | None = None) -> dict:
    tracking.setup(params)
    name = params.registry.model_name
    mv = _resolve(name, version, alias)
    if (mv.tags or {}).get(registry.GATE_TAG) != "true":
        raise CxrError(f"{name} v{mv.version} has no passed gate (tag {registry.GATE_TAG}=true): refusing to promote")
    current = registry.version_by_alias(name, registry.CHAMPION)
    client = registry.client()
    if current is not None and str(current.version) == str(mv.version):
        return {"name": name, "champion": str(mv.version), "changed": False}
    if current is not None:
        client.set_registered_model_alias(name, registry.PREVIOUS, current.version)
    client.set_registered_model_alias(name, registry.CHAMPION, mv.version)
    return {"name": name, "champion": str(mv.version), "previous_champion": str(current.version) if current else None,
            "changed": True}


def rollback(params: Params) -> dict:
    tracking.setup(params)
    name = params.registry.model_name
    previous = registry.version_by_alias(name, registry.PREVIOUS)
    if previous is None:
        raise CxrError(f"model {name} has no {registry.PREVIOUS!r} alias: nothing to roll back to")
    current = registry.version_by_alias(name, registry.CHAMPION)
    client = registry.client()
    client.set_registered_model_alias(name, registry.CHAMPION, previous.version)
    if current is not None:
        client.set_registered_model_alias(name, registry.PREVIOUS, current.version)
    return {"name": name, "champion": str(previous.version),
            "previous_champion": str(current.version) if current else None}
