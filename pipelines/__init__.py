"""Kubeflow Pipelines v2: the same components as a `cxr-training` pipeline (compile, run locally, submit,
schedule). Nothing here is imported by the components: the dependency points one way."""
