"""gunicorn settings for the ML backend: ``gunicorn -c python:ml_backend.gunicorn_conf 'ml_backend:create_app()'``.

One worker process holds one copy of the model; threads serve concurrent requests from it (inference
is thread-safe, and /health must answer within Label Studio's 1 s while a /predict runs). The timeout
is above Label Studio's 100 s /predict timeout. Override any of these on the command line
(``--bind 0.0.0.0:9090 --workers 2``); never use ``--preload`` (the model loader thread would not
survive the fork).
"""

import logging
import os

bind = os.environ.get("VL4POSE_ML_BIND", "127.0.0.1:9090")
workers = 1
worker_class = "gthread"
threads = 4
timeout = 120
graceful_timeout = 30
keepalive = 5
max_requests = 0
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("VL4POSE_LOG_LEVEL", "info").lower()

logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
