import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newcomer_site.settings")

app = Celery("newcomer_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
