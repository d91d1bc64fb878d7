"""A locustfile with no User class: the driver must refuse it with a clear error."""

from __future__ import annotations

from locust import HttpUser


class AbstractBase(HttpUser):
    abstract = True
