"""A read-only view of :class:`~components.core.contract.params.schema.Params` that allows only declared keys.

Every step runs under a view built from its :class:`~components.core.contract.spec.StepSpec`: reading
``params.train.image_size`` when the spec declares neither ``train`` nor ``train.image_size``
raises :class:`UndeclaredParamError`. DVC re-runs a stage only when a declared param changes, so
an undeclared read is a stale result waiting to happen; the view turns it into a test failure.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from components.core.contract.errors import CxrError

_ATTR_TO_KEY = {"validate_": "validate"}
_KEY_TO_ATTR = {v: k for k, v in _ATTR_TO_KEY.items()}

F = TypeVar("F", bound=Callable[..., Any])


class UndeclaredParamError(CxrError):
    """A step read a param its spec does not declare (a bug in the step, not in params.yaml)."""

    exit_code = 1


class ParamsView:
    """Attribute access like ``Params``; only declared keys (or keys under a declared one) resolve."""

    __slots__ = ("_declared", "_prefix", "_step", "_target")

    def __init__(self, target: Any, declared: Iterable[str], prefix: str = "", step: str = "") -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_declared", frozenset(declared))
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_step", step)

    def _covered(self, dotted: str) -> bool:
        parts = dotted.split(".")
        return any(".".join(parts[:i]) in self._declared for i in range(1, len(parts) + 1))

    def _undeclared(self, dotted: str) -> UndeclaredParamError:
        return UndeclaredParamError(
            f"step {self._step or '?'} reads params key {dotted!r} but its spec declares only "
            f"{sorted(self._declared)}: add it to the step's SPEC.params (then `cxr spec sync`)")

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        key = _ATTR_TO_KEY.get(attr, attr) if not self._prefix else attr
        dotted = self._prefix + key
        value = getattr(self._target, attr)
        if self._covered(dotted):
            return value
        if any(d.startswith(dotted + ".") for d in self._declared):
            return ParamsView(value, self._declared, dotted + ".", self._step)
        raise self._undeclared(dotted)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")

    def __repr__(self) -> str:
        return f"ParamsView({self._step}: {sorted(self._declared)})"

    def section(self, name: str) -> dict[str, Any]:
        """One whole section as plain data; the whole section must be declared."""
        if not self._covered(name):
            raise self._undeclared(name)
        return self._target.section(name)

    def declared_dump(self) -> dict[str, Any]:
        """The declared keys as nested plain data (what a step may log or put in a model card)."""
        full = self.unwrap().model_dump(mode="json", by_alias=True)
        out: dict[str, Any] = {}
        for dotted in sorted(self._declared):
            node, dst = full, out
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node[p]
                dst = dst.setdefault(p, {})
            dst[leaf] = node[leaf]
        return out

    def unwrap(self) -> Any:
        """The underlying object. Only for plumbing that re-wraps (a derived Params for a sub-step)."""
        return self._target


def view(params: Any, declared: Iterable[str], step: str = "") -> ParamsView:
    """Wrap ``params`` (a ``Params`` or another view) so only ``declared`` keys resolve."""
    target = params.unwrap() if isinstance(params, ParamsView) else params
    return ParamsView(target, declared, "", step)


def under_spec(spec) -> Callable[[F], F]:
    """Decorate a step's ``run(params, …)``: it runs under the spec's params view, logged with its timing."""

    def decorate(fn: F) -> F:
        log = logging.getLogger(spec.module_name)

        @functools.wraps(fn)
        def wrapper(params, *args, **kwargs):
            current = wrapper.spec  # type: ignore[attr-defined]  # read at call time: tests swap it
            shown = {k: str(v) for k, v in kwargs.items() if v is not None and not isinstance(v, bool)}
            log.info("start %s %s", current.name, " ".join(f"{k}={v}" for k, v in shown.items()))
            started = time.perf_counter()
            # a step's run() calling its own run_partition()/merge() keeps the view it runs under
            nested = isinstance(params, ParamsView) and params._step == current.name
            try:
                result = fn(params if nested else view(params, current.params, current.name), *args, **kwargs)
            except BaseException as err:
                log.error("%s failed after %.1f s: %s", spec.name, time.perf_counter() - started,
                          str(err).splitlines()[0] if str(err) else type(err).__name__)
                raise
            log.info("done %s in %.1f s", spec.name, time.perf_counter() - started)
            return result

        wrapper.spec = spec  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
