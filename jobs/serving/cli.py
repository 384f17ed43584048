"""`python -m jobs.serve`: the command line of the model server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from jobs.core.cli import JobError, parser, port_number, positive_float, positive_int
from jobs.core.paths import MODEL_NAME
from jobs.serving import limits as limits_module
from jobs.serving.app import Settings, create_app
from jobs.serving.connections import ConnectionStats, protocol_class
from jobs.serving.limits import Limits
from jobs.serving.versions import DEFAULT_LOAD_RETRIES, DEFAULT_LOAD_RETRY_SECONDS

log = logging.getLogger("jobs.serve")


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def build_parser():
    p = parser("Serve the promoted model with TF Serving's REST API (predict, status, metadata, metrics).")
    p.add_argument(
        "--model-base-path", type=Path, required=True, help="folder of numeric version folders (<work>/models/fmnist)"
    )
    p.add_argument("--model-name", default=MODEL_NAME, help="the model name in the URL paths")
    p.add_argument(
        "--model-config-file",
        type=Path,
        help="a TF Serving model config (jobs.serving_config) re-read at every poll: a `specific` "
        "version of the model pins what is served; missing, the placeholder or `latest`: the highest",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", type=port_number, default=8501, help="port to listen on")
    p.add_argument(
        "--poll-seconds", type=positive_float, default=1.0, help="how often to look for a new version on disk"
    )
    p.add_argument(
        "--load-retries",
        type=_non_negative_int,
        default=DEFAULT_LOAD_RETRIES,
        help="times a version that failed to load is tried again unchanged (TF Serving: --max_num_load_retries)",
    )
    p.add_argument(
        "--load-retry-seconds",
        type=positive_float,
        default=DEFAULT_LOAD_RETRY_SECONDS,
        help="wait between those tries; a version whose files change is tried at the next poll",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=64,
        help="most instances merged into one signature call across waiting requests",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        help="threads running signature calls (TF's own pools are sized from the CPUs)",
    )
    group = p.add_argument_group("limits (what a client gets past each: docs/serving.md)")
    for field in limits_module.fields():
        kind = positive_int if field.type in (int, "int") else positive_float
        group.add_argument(
            limits_module.flag(field),
            type=kind,
            default=field.default,
            help=f"{field.metadata['help']}; past it: {field.metadata['answer']}",
        )
    return p


def limits_from(args) -> Limits:
    return Limits(**{field.name: getattr(args, field.name) for field in limits_module.fields()})


def check_can_listen(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as err:
        raise JobError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model_base_path.is_dir():
        raise JobError(
            f"model base path {args.model_base_path} is not a folder: promote a model first "
            f"(make local), or point --model-base-path at <work>/models/{args.model_name}"
        )
    check_can_listen(args.host, args.port)  # before the slow TensorFlow import
    import uvicorn

    from jobs.core.cpus import configure_threads

    threads = configure_threads()
    log.info("TensorFlow uses %d CPU threads", threads)
    limits = limits_from(args)
    settings = Settings(
        model_name=args.model_name,
        base_path=args.model_base_path.resolve(),
        poll_seconds=args.poll_seconds,
        max_batch=args.max_batch,
        threads=args.threads,
        limits=limits,
        load_retries=args.load_retries,
        load_retry_seconds=args.load_retry_seconds,
        model_config_file=args.model_config_file.resolve() if args.model_config_file else None,
    )
    app = create_app(settings)
    stats = ConnectionStats()
    app.metrics.watch(lambda: app.scheduler.queued_pixels if app.scheduler else 0, lambda: stats.open)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=protocol_class(limits, stats),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=limits.keep_alive_timeout,
        timeout_graceful_shutdown=10,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    log.info("serving %s from %s on http://%s:%d", args.model_name, settings.base_path, args.host, args.port)
    try:
        asyncio.run(server.serve())
    except (OSError, SystemExit) as err:  # uvicorn exits when it cannot bind
        reason = getattr(err, "strerror", None) or "see the log above"
        raise JobError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    if not server.started:
        raise JobError(f"the server did not start on {args.host}:{args.port} (see the log above)")
    return 0
