"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class CxrError(Exception):
    """An error caused by input, configuration or environment that the user can fix.

    The message must say what is wrong (naming the file, key or server) and what to do.
    """

    exit_code = 2


class ParamsError(CxrError):
    """``params.yaml`` does not match the schema."""


class DataError(CxrError):
    """The data (images, labels, manifests) cannot be used as they are."""


class ServiceError(CxrError):
    """A service (MLflow server, Kaggle, KFP) is unreachable or refused the request."""

    exit_code = 3
