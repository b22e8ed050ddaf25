"""Pipeline steps. Each module exposes ``run(...) -> summary``; shared internals live in ``components.core``."""
