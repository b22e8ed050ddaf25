"""The ``cxr-monitor`` pipeline's single task: :mod:`components.ops.monitor` on the cluster, on a schedule
(``cxr pipeline schedule --monitor``), submitting the ``cxr-training`` pipeline when retraining is due.

The task reads the prediction log from a mounted volume (``ClusterConfig.prediction_log_pvc``, the
same ReadWriteMany share the model server writes to: ``infra/k8s/serving``), the champion's
reference from MLflow, and submits the training pipeline compiled into the image
(``/app/pipelines/compiled/cxr_training.yaml``) to the in-cluster KFP API.
"""

from kfp.dsl import HTML, Metrics, Output


def cxr_monitor(
    monitor: dict,
    registry: dict,
    mlflow: dict,
    log_dir: str,
    model: str,
    kfp_host: str,
    training_package: str,
    experiment: str,
    report: Output[HTML],
    summary: Output[Metrics],
) -> bool:
    """Compare the prediction log with the champion's training reference; submit cxr-training when due.

    Args:
        monitor: the ``monitor`` section of params.yaml (thresholds, window).
        registry: the ``registry`` section of params.yaml (reads model_name).
        mlflow: the ``mlflow`` section of params.yaml.
        log_dir: the prediction log folder (the mounted volume the model server writes to).
        model: the reference model URI (empty: models:/<registry.model_name>@champion).
        kfp_host: KFP API to submit the training pipeline to when retraining is due (empty: report only).
        training_package: the compiled training pipeline in the image.
        experiment: KFP experiment of the training run.
        report: the monitor's HTML report.
        summary: OOD rate, drift statistics and the verdict, for the KFP UI.

    Returns:
        True when retraining is due.
    """
    from pipelines.monitor import run_monitor_task

    return run_monitor_task(locals())


def run_monitor_task(args: dict) -> bool:
    import json
    import shutil
    import time
    from pathlib import Path

    from components.core.contract import logs
    from components.core.contract.params.schema import parse_params
    from components.ops import monitor

    logs.configure()
    params = parse_params({s: args[s] for s in monitor.SPEC.sections}, "parameters of cxr-monitor")
    out = Path(args["report"].path).parent / "monitor-report"
    trigger = None
    if args["kfp_host"]:
        from pipelines import client

        def trigger(summary: dict) -> dict:
            return client.submit(args["kfp_host"], args["training_package"], args["experiment"],
                              run_name=f"cxr-training-retrain-{int(time.time())}")

    result = monitor.run(params, args["log_dir"], out, model=args["model"], trigger=trigger)
    Path(args["report"].path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "report.html", args["report"].path)
    metrics = args["summary"]
    metrics.log_metric("predictions", result["predictions"])
    metrics.log_metric("retraining_due", 1.0 if result["retraining"]["due"] else 0.0)
    rate = (result["checks"].get("ood_rate") or {}).get("rate")
    if rate is not None:
        metrics.log_metric("ood_rate", rate)
    Path(metrics.path).write_text(json.dumps(result, default=str))
    return bool(result["retraining"]["due"])
