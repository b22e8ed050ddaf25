"""Write ``kubeflow-trainer-v1alpha1.schema.json``: the JSON schema of the Kubeflow Trainer ``TrainJob`` and
``TrainingRuntime`` (``trainer.kubeflow.org/v1alpha1``), for the offline validation of infra/k8s/trainer and of
the TrainJob the pipeline creates (tests/infra/test_trainer_manifests.py).

The Trainer's CRD YAML is not on a package registry; its Python API models are: ``kubeflow-trainer-api`` on
PyPI (pydantic models generated from the Trainer's OpenAPI spec, with the Kubernetes and JobSet types they
embed). This script turns those models into one schema with shared definitions, and makes every object
strict (``additionalProperties: false``, as ``kubectl``'s default strict field validation treats a CRD)::

    pip download kubeflow-trainer-api==2.3.0 --no-deps -d /tmp/kta && cd /tmp/kta && unzip -q -o *.whl -d pkg
    PYTHONPATH=/tmp/kta/pkg python tests/infra/schemas/trainer_schema.py 2.3.0

It is not a dependency of the project: the generated schema is committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("kubeflow-trainer-v1alpha1.schema.json")
# The generated models get two Kubernetes scalar types wrong (OpenAPI Generator makes objects of them): a
# resource.Quantity is a string ("8Gi", "500m") or a number, an IntOrString an integer or a string.
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
SCALARS = {
    "IoK8sApimachineryPkgApiResourceQuantity": {"anyOf": [{"type": "string", "pattern": QUANTITY},
                                                          {"type": "number"}]},
    "IoK8sApimachineryPkgUtilIntstrIntOrString": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
}


def strict(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def main(version: str) -> None:
    import kubeflow_trainer_api
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob

    defs: dict = {}
    roots = {}
    for kind, model in (("TrainJob", TrainerV1alpha1TrainJob), ("TrainingRuntime", TrainerV1alpha1TrainingRuntime)):
        schema = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        roots[kind] = {"$ref": f"#/$defs/{model.__name__}"}
    defs.update(SCALARS)
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Kubeflow Trainer trainer.kubeflow.org/v1alpha1 TrainJob and TrainingRuntime",
        "x-source": f"generated from kubeflow-trainer-api=={version} (PyPI, {kubeflow_trainer_api.__name__}) by "
                    "tests/infra/schemas/trainer_schema.py; objects made strict (additionalProperties: false); "
                    "Quantity and IntOrString as Kubernetes defines them",
        "x-kinds": roots,
        "oneOf": list(roots.values()),
        "$defs": strict(defs),
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size // 1024} KiB, {len(defs)} definitions")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "2.3.0")
