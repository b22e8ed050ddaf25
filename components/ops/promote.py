"""Promote and roll back: move the ``champion`` alias, keeping the old one as ``previous-champion``.

Only a version tagged with a passed gate can become champion, and only when its gate was made
against the *current* champion (tag ``gated_against``): a decision against v3 says nothing once v4
serves. Re-gate first (``dvc repro`` re-runs the gate when the champion changed), or pass
``--force --reason "…"``, which is recorded. Every promotion and rollback is recorded on the
version it moves to: time, user, from → to, reason (tags ``promoted_*`` / ``rolled_back_*``, and a
bounded ``alias_history`` JSON list). Aliases are single-valued, so two promotions racing leave
``champion`` on exactly one passed version (the last writer wins).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time

from components.core.contract.errors import CxrError, RefusedError
from components.core.registry import registry, tracking

log = logging.getLogger(__name__)
HISTORY_TAG = "alias_history"


def _resolve(name: str, version: str | None, alias: str | None):
    if version:
        return registry.get_version(name, version)
    mv = registry.version_by_alias(name, alias or registry.CHALLENGER)
    if mv is None:
        raise CxrError(f"model {name} has no alias {alias or registry.CHALLENGER!r}: register a model first "
                       "(`cxr register`) or pass --version")
    return mv


def _user() -> str:
    try:
        return os.environ.get("CXR_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _record(client, name: str, version: str, event: str, previous: str | None, reason: str, forced: bool) -> dict:
    """Tags on the version the alias moved to: who, when, from what, why (and a short history)."""
    entry = {"event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": _user(),
             "from": previous or "none", "to": version, "reason": reason, "forced": forced}
    mv = client.get_model_version(name, version)
    try:
        history = json.loads((mv.tags or {}).get(HISTORY_TAG) or "[]")
    except ValueError:
        history = []
    history.append(entry)
    while len(json.dumps(history)) > 4800 and len(history) > 1:
        history.pop(0)
    prefix = "promoted" if event == "promote" else "rolled_back"
    tags = {f"{prefix}_at": entry["at"], f"{prefix}_by": entry["by"], f"{prefix}_from": entry["from"],
            f"{prefix}_reason": reason[:5000], HISTORY_TAG: json.dumps(history)}
    if forced:
        tags["promotion_forced"] = "true"
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    return entry


def promote(params, version: str | None = None, alias: str | None = None, force: bool = False,
            reason: str | None = None) -> dict:
    """Make a gated version the champion; refuse a stale or ungated one unless forced with a reason."""
    tracking.setup(params)
    name = params.registry.model_name
    mv = _resolve(name, version, alias)
    tags = mv.tags or {}
    if tags.get(registry.GATE_TAG) != "true":
        raise RefusedError(f"{name} v{mv.version} has no passed gate (tag {registry.GATE_TAG}=true): refusing to "
                           "promote")
    current = registry.version_by_alias(name, registry.CHAMPION)
    if current is not None and str(current.version) == str(mv.version):
        return {"name": name, "champion": str(mv.version), "changed": False}
    now = str(current.version) if current is not None else "none"
    gated_against = tags.get("gated_against", "unknown")
    if force and not (reason and reason.strip()):
        raise CxrError("--force needs --reason \"…\": the reason is recorded on the version")
    stale = gated_against != now
    if stale and not force:
        raise RefusedError(
            f"{name} v{mv.version} was gated against champion {gated_against}, but the champion is now {now}: "
            "its gate decision is stale. Re-gate it (`dvc repro`, which re-runs the gate when the champion "
            "changes, or `cxr gate` then `cxr register`), or pass --force --reason \"…\" to promote anyway "
            "(recorded on the version).")
    client = registry.client()
    if current is not None:
        client.set_registered_model_alias(name, registry.PREVIOUS, current.version)
    client.set_registered_model_alias(name, registry.CHAMPION, mv.version)
    why = reason or f"gate passed against champion {gated_against}"
    entry = _record(client, name, str(mv.version), "promote", None if current is None else now, why,
                    forced=stale and force)
    log.info("champion of %s: v%s -> v%s (%s)", name, now, mv.version, why)
    return {"name": name, "champion": str(mv.version), "previous_champion": None if current is None else now,
            "changed": True, "forced": stale and force, "record": entry}


def rollback(params, reason: str | None = None) -> dict:
    """Swap champion and previous-champion (no gate check: this is the way back), recorded."""
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
    entry = _record(client, name, str(previous.version), "rollback",
                    None if current is None else str(current.version), reason or "rollback", forced=False)
    log.info("rolled back %s to v%s", name, previous.version)
    return {"name": name, "champion": str(previous.version),
            "previous_champion": str(current.version) if current else None, "record": entry}
