"""Hot swap: the model in service, replaced atomically while requests keep flowing.

:class:`ModelHolder` keeps the current :class:`~components.core.model.bundle.ModelBundle`. A request
reads ``holder.current`` once and uses that bundle for everything it does (decoding size,
inference, the version it reports), so each response names the version that really answered it. A
swap loads and warms up (compiles) the new bundle *beside* the old one and then replaces one
reference: no request waits for the load, none sees half a model, and the old bundle is freed when
its last request finishes.

:class:`AliasFollower` (``cxr serve --follow-alias champion``) polls the registry every
``poll_seconds`` and swaps when the alias points at another version; a registry that does not
answer, or a version that does not load, leaves the current model serving (counted in
``cxr_model_swaps_total{result="failed"}`` and logged).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from components.core.model.bundle import ModelBundle

log = logging.getLogger("cxr.serve")


def warm_up(bundle: ModelBundle) -> None:
    """Compile the bundle's inference graph before it takes traffic."""
    bundle.infer_ood(np.zeros((1, bundle.image_size, bundle.image_size, 1), np.uint8))


class ModelHolder:
    def __init__(self, bundle: ModelBundle, on_swap: Callable[[ModelBundle], None] | None = None) -> None:
        self._current = bundle
        self._lock = threading.Lock()  # one swap at a time; readers never take it
        self.on_swap = on_swap
        self.swaps = 0

    @property
    def current(self) -> ModelBundle:
        return self._current

    def swap(self, bundle: ModelBundle) -> ModelBundle:
        """Warm ``bundle`` up, then make it current; returns the bundle it replaced."""
        warm_up(bundle)
        with self._lock:
            old, self._current = self._current, bundle  # one reference assignment: atomic for readers
            self.swaps += 1
        if self.on_swap:
            self.on_swap(bundle)
        log.info("model swapped: %s v%s -> v%s", bundle.name, old.version, bundle.version)
        return old


class AliasFollower(threading.Thread):
    """Poll ``models:/<name>@<alias>`` and hot-swap the holder's model when the alias moves."""

    def __init__(self, holder: ModelHolder, name: str, alias: str, poll_seconds: float = 30.0,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        super().__init__(name=f"follow-{alias}", daemon=True)
        self.holder, self.model_name, self.alias = holder, name, alias
        self.poll_seconds = poll_seconds
        self.on_failure = on_failure
        self.stopped = threading.Event()
        self.checks = 0

    def check_once(self) -> bool:
        """One poll; True when the model was swapped."""
        from components.core.registry import registry

        self.checks += 1
        mv = registry.version_by_alias(self.model_name, self.alias)
        if mv is None or str(mv.version) == str(self.holder.current.version):
            return False
        started = time.perf_counter()
        bundle = registry.load(f"models:/{self.model_name}/{mv.version}")
        bundle.alias, bundle.uri = self.alias, f"models:/{self.model_name}@{self.alias}"
        self.holder.swap(bundle)
        log.info("following %s@%s: now v%s (loaded in %.1f s)", self.model_name, self.alias, mv.version,
                 time.perf_counter() - started)
        return True

    def run(self) -> None:
        while not self.stopped.wait(self.poll_seconds):
            try:
                self.check_once()
            except Exception as err:  # keep serving the current model; try again at the next poll
                log.warning("following %s@%s failed: %s: %s", self.model_name, self.alias, type(err).__name__,
                            str(err)[:300])
                if self.on_failure:
                    self.on_failure(err)

    def stop(self) -> None:
        self.stopped.set()
