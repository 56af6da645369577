"""The ceiling of `bench/capture_rps.py`: a hello-world Flask route on the rating link's
path, served by gunicorn with the hub's own settings (`gunicorn.conf.py`)."""

from flask import Flask

hello = Flask("hello")


@hello.route("/r/<token>/<int(signed=True):score>", methods=["GET", "POST"])
def hello_world(token: str, score: int) -> str:
    return "Hello, World!"
