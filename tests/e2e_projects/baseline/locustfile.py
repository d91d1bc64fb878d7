"""One user class that reads the tiny pod's front page, a few requests per second each."""

from locust import HttpUser, constant, task


class Reader(HttpUser):
    wait_time = constant(0.1)

    @task
    def front_page(self) -> None:
        self.client.get("/")
