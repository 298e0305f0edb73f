"""Vigil: incident assistant for AI workloads on Kubernetes."""

from .celery import app as celery_app

__all__ = ["celery_app"]
