"""Serving: batch prediction, the REST API and its web page."""
