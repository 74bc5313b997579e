"""The example's pages; the hub's routes are served beside them (mysite/asgi.py)."""

from django.urls import include, path
from reports import views

urlpatterns = [
    path("", views.page, name="page"),
    path("start/", views.start, name="start"),
    path("accounts/", include("django.contrib.auth.urls")),
]
