"""Prometheus metrics of the model server (``GET /metrics``, prometheus-client's text format).

Each app has its own :class:`~prometheus_client.CollectorRegistry` (several apps in one process, as in
tests, do not share counters). Every series about requests or predictions carries the
``model_version`` that answered, so a canary and the stable version are told apart in one query
(``cxr deploy`` reads them):

=====================================  ==========  =========================================================
``cxr_requests_total``                 counter     endpoint, method, code, model_version
``cxr_request_duration_seconds``       histogram   endpoint
``cxr_request_errors_total``           counter     endpoint, code, error (the JSON ``error`` code: too_large…)
``cxr_predictions_total``              counter     model_version, label (the arg-max class)
``cxr_ood_flags_total``                counter     model_version (predictions flagged unlike_training_data)
``cxr_ood_score_ratio``                histogram   model_version (OOD score / the model's threshold; >1 flagged)
``cxr_feedback_total``                 counter     model_version, agrees (``POST /feedback``)
``cxr_model_info``                     gauge       name, version, alias, uri (1 for the model in service)
``cxr_model_swaps_total``              counter     result (ok, failed: ``--follow-alias`` hot swaps)
``cxr_prediction_log_errors_total``    counter     (the prediction could not be appended to the log)
=====================================  ==========  =========================================================
"""

from __future__ import annotations

import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("cxr_requests", "HTTP requests", ["endpoint", "method", "code", "model_version"],
                                registry=r)
        self.latency = Histogram("cxr_request_duration_seconds", "request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("cxr_request_errors", "error responses by code and reason",
                              ["endpoint", "code", "error"], registry=r)
        self.predictions = Counter("cxr_predictions", "predictions by arg-max class", ["model_version", "label"],
                                   registry=r)
        self.ood_flags = Counter("cxr_ood_flags", "predictions flagged unlike_training_data", ["model_version"],
                                 registry=r)
        self.ood_ratio = Histogram("cxr_ood_score_ratio", "OOD score divided by the model's threshold",
                                   ["model_version"], buckets=RATIO_BUCKETS, registry=r)
        self.feedback = Counter("cxr_feedback", "ground-truth labels received", ["model_version", "agrees"],
                                registry=r)
        self.model_info = Gauge("cxr_model_info", "the model in service (1)", ["name", "version", "alias", "uri"],
                                registry=r)
        self.swaps = Counter("cxr_model_swaps", "model hot swaps (--follow-alias)", ["result"], registry=r)
        self.log_errors = Counter("cxr_prediction_log_errors", "predictions that could not be logged", registry=r)
        self._info_labels: tuple[str, ...] | None = None
        self._lock = threading.Lock()

    def set_model(self, bundle) -> None:
        labels = (bundle.name or "", bundle.version or "", bundle.alias or "", bundle.uri or "")
        with self._lock:
            if self._info_labels is not None and self._info_labels != labels:
                self.model_info.remove(*self._info_labels)
            self.model_info.labels(*labels).set(1)
            self._info_labels = labels

    def observe_prediction(self, version: str, label: str, flagged: bool | None, ratio: float | None) -> None:
        self.predictions.labels(version, label).inc()
        if flagged is not None:
            self.ood_flags.labels(version)  # the series exists (at 0) from the first prediction
            if flagged:
                self.ood_flags.labels(version).inc()
        if ratio is not None:
            self.ood_ratio.labels(version).observe(ratio)

    def render(self) -> bytes:
        return generate_latest(self.registry)
