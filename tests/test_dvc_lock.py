"""The committed results are those of the committed code: `dvc.lock` (which recorded the code, data files and params
every stage last ran with, and whose outputs are the committed reports) agrees with the working tree.

Read from the deps alone, by DVC itself (each dependency's workspace status against the lock), so it needs none of
the outputs (data, models): a checkout in CI is enough. A dependency that is another stage's output is left out
(it changes only when its own stage's deps do). When this fails, run `dvc repro` and commit dvc.lock and reports/.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stale_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, what makes it stale: a changed command, a stage missing from the lock, or a dependency (file or
    params key) whose content differs from the one recorded."""
    from dvc.repo import Repo

    lock = (yaml.safe_load((root / "dvc.lock").read_text()) or {}).get("stages", {})
    out: dict[str, list[str]] = {}
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        produced = {str(o.def_path) for s in stages for o in s.outs}
        for stage in stages:
            name = stage.name
            found = []
            if name not in lock:
                found.append("not in dvc.lock")
            elif " ".join(str(lock[name].get("cmd", "")).split()) != " ".join(str(stage.cmd).split()):
                found.append(f"command changed: {stage.cmd}")
            for dep in stage.deps:
                path = str(dep.def_path)
                if path in produced or any(path.startswith(p + "/") for p in produced):
                    continue
                for what, change in (dep.workspace_status() or {}).items():
                    if isinstance(change, dict):  # params: one entry per key
                        found += [f"{what} {key}: {v}" for key, v in change.items()]
                    else:
                        found.append(f"{what}: {change}")
            if found:
                out[name] = found
    return out


def test_dvc_lock_matches_the_committed_code_and_params():
    stale = stale_deps(ROOT)
    assert not stale, ("dvc.lock disagrees with the working tree (run `dvc repro` and commit dvc.lock and the "
                       "reports):\n" + "\n".join(f"  {s}: {', '.join(v[:6])}" + (" …" if len(v) > 6 else "")
                                                 for s, v in stale.items()))


def test_the_check_sees_an_edited_dependency(tmp_path):
    """A stale lock fails: a copy of the repository whose lock is made current for the model card module and the
    gate params (as `dvc repro` would record them), then both edited."""
    import hashlib

    from benchmarks.processes import copy_repo

    repo = copy_repo(tmp_path)
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    card = repo / "components/core/registry/modelcard.py"
    register = lock["stages"]["register"]
    register["deps"] = [d for d in register["deps"] if d["path"] != "components/core/registry/modelcard.py"] + [
        {"path": "components/core/registry/modelcard.py", "hash": "md5",
         "md5": hashlib.md5(card.read_bytes()).hexdigest(), "size": card.stat().st_size}]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    lock["stages"]["gate"].setdefault("params", {}).setdefault("params.yaml", {})["gate"] = params["gate"]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    def mentions(stale, stage, what):
        return any(what in s for s in stale.get(stage, []))

    before = stale_deps(repo)
    assert not mentions(before, "register", "modelcard.py") and not mentions(before, "gate", "params.yaml gate:")
    card.write_text(card.read_text() + "\n# an edit after the lock\n")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("min_power: 0.95", "min_power: 0.9"))
    after = stale_deps(repo)
    assert mentions(after, "register", "modelcard.py") and mentions(after, "gate", "params.yaml gate:")
