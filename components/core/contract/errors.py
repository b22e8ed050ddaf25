"""User-facing errors and the exit codes of the ``cxr`` command.

The CLI prints an error's message (no traceback) and exits with its code:

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success (a failed gate is a result, not an error, unless ``cxr gate --strict``)
1     internal error: a bug (the traceback is printed; please report it)
2     usage error: unknown option or missing argument (argparse)
3     bad parameters: ``params.yaml`` or ``--set`` does not match the schema
4     bad data or input: images, labels, manifests, missing files, a model that cannot be used
5     service unavailable: MLflow, Kaggle, DVC remote or Kubeflow Pipelines did not answer
6     refused by policy: a failed gate with ``--strict``, promoting an ungated or stale version
130   interrupted (Ctrl-C / SIGINT); outputs are left as they were
====  =====================================================================================
"""

from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_PARAMS, EXIT_DATA, EXIT_SERVICE, EXIT_REFUSED = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130


class CxrError(Exception):
    """An error caused by input, configuration or environment that the user can fix.

    The message must say what is wrong (naming the file, key or server) and what to do.
    """

    exit_code = EXIT_DATA


class ParamsError(CxrError):
    """``params.yaml`` does not match the schema."""

    exit_code = EXIT_PARAMS


class DataError(CxrError):
    """The data (images, labels, manifests) cannot be used as they are."""

    exit_code = EXIT_DATA


class ServiceError(CxrError):
    """A service (MLflow server, Kaggle, KFP) is unreachable or refused the request."""

    exit_code = EXIT_SERVICE


class RefusedError(CxrError):
    """A policy said no: a failed gate under ``--strict``, an ungated or stale promotion."""

    exit_code = EXIT_REFUSED
