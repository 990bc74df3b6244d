# Celery's "First steps with Django": load the app when Django starts so that @shared_task
# (the tasks of semantic_search) uses it.
from .celery import app as celery_app

__all__ = ("celery_app",)
