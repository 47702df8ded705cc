"""Development server: ``python -m ml_backend --port 9090`` (Flask's threaded server, not for production).

Production: ``gunicorn -c python:ml_backend.gunicorn_conf 'ml_backend:create_app()'``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ml_backend import create_app
from vl4pose.errors import VL4PoseError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    parser.add_argument("--log-level", default=os.environ.get("VL4POSE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        app = create_app()
    except VL4PoseError as exc:
        logging.getLogger("ml_backend").error("%s", exc)
        return 2
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
