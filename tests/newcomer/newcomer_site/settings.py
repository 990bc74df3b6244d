"""Settings of a small bookshop site that adds semantic_search to an existing catalogue."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("NEWCOMER_SECRET_KEY", "newcomer-site-not-a-real-secret")
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "semantic_search",
    "catalogue",
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

ROOT_URLCONF = "newcomer_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("NEWCOMER_DB_NAME", "newcomer"),
        "HOST": os.environ.get("NEWCOMER_DB_HOST", "localhost"),
        "PORT": os.environ.get("NEWCOMER_DB_PORT", "5432"),
        "USER": os.environ.get("NEWCOMER_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("NEWCOMER_DB_PASSWORD", ""),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

CELERY_BROKER_URL = os.environ.get("NEWCOMER_BROKER_URL", "redis://localhost:6379/0")

SEMANTIC_SEARCH = {
    "LANGUAGES": ["en", "de", "fr", "es"],
    "EMBEDDERS": {
        "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*"},
    },
    "MODELS": {
        "catalogue.Book": {
            "fields": {"title": "A", "summary": "B", "author__name": "C"},
            "language_field": "language__code",
        },
    },
}
