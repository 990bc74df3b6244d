"""Settings of the example project: the demo site and the test host of semantic_search."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SEMANTIC_SEARCH_MODEL_CACHE", str(BASE_DIR / ".cache" / "models"))


def _service_urls() -> dict[str, str]:
    """URLs from the environment, else those of the embedded services (started if needed)."""
    if os.environ.get("DATABASE_URL") and os.environ.get("CELERY_BROKER_URL"):
        return dict(os.environ)
    from example_project import services

    services.start()
    return services.environment()


_urls = _service_urls()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "semantic_search",
    "semantic_search.contrib.evaluation",  # the evaluate command (tests, bench/)
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {"default": dj_database_url.parse(_urls["DATABASE_URL"], conn_max_age=0)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
LANGUAGE_CODE = "en-us"

CELERY_BROKER_URL = _urls["CELERY_BROKER_URL"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True

SEMANTIC_SEARCH = {
    "LANGUAGES": ["en", "de", "es", "ru", "zh", "ar"],
    "EMBEDDERS": {
        "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*"},
        "english": {"MODEL": "packaged:all-MiniLM-L6-v2", "LANGUAGES": ["en"]},
    },
    "SYNC": os.environ.get("SEMANTIC_SEARCH_SYNC", "0") == "1",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"semantic_search": {"handlers": ["console"], "level": "INFO"}},
}
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
