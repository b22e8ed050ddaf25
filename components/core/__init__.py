"""Shared internals of the pipeline steps (config, images, manifest, models, datasets, registry)."""
