"""The ``cxr`` command-line interface."""
