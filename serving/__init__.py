"""Serving side: the HTTP service and offline batch scoring."""
