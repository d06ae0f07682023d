"""A WSGI app whose handler sleeps HANDLER_MS (from the environment): run under Gunicorn's
sync workers, each worker serves one connection at a time, so with fewer workers than
clients the rest wait in the listening socket's accept queue."""

import os
import time

HANDLER_S = int(os.environ.get("HANDLER_MS", "50")) / 1000.0


def app(environ, start_response):
    time.sleep(HANDLER_S)
    body = b"ok\n"
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
