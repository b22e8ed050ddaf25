"""Render a kustomization without kubectl: the subset of kustomize this repository uses
(resources, namespace, labels, images, strategic-merge patches by target).

    python infra/k8s/render.py infra/k8s/overlays/gpu-cluster > rendered.yaml

CI renders with this and validates every object against the Kubernetes schemas; the tests also
check it agrees with `kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "name", "ports": "containerPort"}


def _merge(base, patch, key: str | None = None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        field = MERGE_KEYS.get(key or "")
        if key == "volumeClaimTemplates":
            by = {d["metadata"]["name"]: d for d in base}
            for p in patch:
                by[p["metadata"]["name"]] = _merge(by.get(p["metadata"]["name"], {}), p)
            return list(by.values())
        if field and all(isinstance(d, dict) and field in d for d in base + patch):
            out = [copy.deepcopy(d) for d in base]
            for p in patch:
                match = next((i for i, d in enumerate(out) if d[field] == p[field]), None)
                if match is None:
                    out.append(copy.deepcopy(p))
                else:
                    out[match] = _merge(out[match], p)
            return out
    return copy.deepcopy(patch)


def _pod_specs(obj: dict):
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        yield spec
    elif "template" in spec:
        yield spec["template"].get("spec", {})


def render(directory: str | Path) -> list[dict]:
    directory = Path(directory)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for res in k.get("resources", []):
        path = directory / res
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in k.get("images", []):
        for obj in objects:
            for pod in _pod_specs(obj):
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    name = c["image"].split("@")[0].rsplit(":", 1)[0] if ":" in c["image"].split("/")[-1] \
                        else c["image"]
                    if name == image["name"]:
                        c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}" \
                            if "newTag" in image else image.get("newName", image["name"])
    for patch in k.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = patch.get("target", {"kind": body["kind"], "name": body["metadata"]["name"]})
        hits = [i for i, o in enumerate(objects)
                if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        if not hits:
            raise SystemExit(f"{directory / patch['path']}: no {target['kind']}/{target['name']} to patch")
        for i in hits:
            objects[i] = _merge(objects[i], body)
    return objects


if __name__ == "__main__":
    sys.stdout.write(yaml.safe_dump_all(render(sys.argv[1]), sort_keys=False))
