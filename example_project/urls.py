from django.contrib import admin
from django.urls import path

from example_project.demo import views

urlpatterns = [
    path("", views.search, name="search"),
    path("status/", views.index_status, name="status"),
    path("status/json", views.index_status_json, name="status-json"),
    path("status/reindex", views.reindex, name="reindex"),
    path("admin/", admin.site.urls),
]
