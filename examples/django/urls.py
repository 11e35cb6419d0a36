from django.urls import path

from . import views

urlpatterns = [path("api/token", views.issue_token, name="switchboard-token")]
