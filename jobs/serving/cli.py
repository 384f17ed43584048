"""`python -m jobs.serve`: the command line of the model server."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from jobs.core.cli import JobError, parser, port_number, positive_float, positive_int
from jobs.core.paths import MODEL_NAME
from jobs.serving import limits as limits_module
from jobs.serving import modelconfig
from jobs.serving.app import Settings, create_app
from jobs.serving.connections import ConnectionStats, protocol_class
from jobs.serving.limits import Limits
from jobs.serving.modelconfig import ModelConfig
from jobs.serving.signals import PredictionLog
from jobs.serving.versions import DEFAULT_LOAD_RETRIES, DEFAULT_LOAD_RETRY_SECONDS

log = logging.getLogger("jobs.serve")


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _flag_bool(text: str) -> bool:
    """TF Serving's boolean flag values (`--rest_api_enable_cors_support=true`)."""
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1")


def build_parser():
    p = parser(
        "Serve SavedModels with TF Serving's REST API (predict, classify, regress, status, metadata, "
        "Prometheus metrics). Flags with underscores are TF Serving's own names for the same setting."
    )
    p.add_argument(
        "--model-base-path",
        "--model_base_path",
        type=Path,
        help="folder of the model's numeric version folders (<work>/models/fmnist); ignored with --model-config-file",
    )
    p.add_argument(
        "--model-name", "--model_name", default=MODEL_NAME, help="the model's name in URLs (with --model-base-path)"
    )
    p.add_argument(
        "--model-config-file",
        "--model_config_file",
        type=Path,
        help="a TF Serving model config (ModelServerConfig text: models, version policies, version labels), "
        "read again at every poll; until it exists or lists a model, nothing is served",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", "--rest_api_port", type=port_number, default=8501, help="port to listen on (REST)")
    p.add_argument(
        "--rest-api-enable-cors-support",
        "--rest_api_enable_cors_support",
        nargs="?",
        const=True,
        default=False,
        type=_flag_bool,
        help="CORS headers on every /v1 answer, as TF Serving's flag",
    )
    p.add_argument(
        "--poll-seconds",
        "--file_system_poll_wait_seconds",
        type=positive_float,
        default=1.0,
        help="how often to look for new versions on disk (and read the model config file again)",
    )
    p.add_argument(
        "--load-retries",
        "--max_num_load_retries",
        type=_non_negative_int,
        default=DEFAULT_LOAD_RETRIES,
        help="times a version that failed to load is tried again unchanged",
    )
    p.add_argument(
        "--load-retry-seconds",
        type=positive_float,
        default=DEFAULT_LOAD_RETRY_SECONDS,
        help="wait between those tries (TF Serving: --load_retry_interval_micros); a version whose files "
        "change is tried at the next poll",
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
    p.add_argument(
        "--tensorflow-intra-op-parallelism",
        "--tensorflow_intra_op_parallelism",
        type=_non_negative_int,
        default=0,
        help="threads running one op, as TF Serving's flag; 0: every CPU but one (one is the HTTP loop's)",
    )
    p.add_argument(
        "--tensorflow-inter-op-parallelism",
        "--tensorflow_inter_op_parallelism",
        type=_non_negative_int,
        default=0,
        help="threads running independent ops at once, as TF Serving's flag; 0: up to 2",
    )
    group = p.add_argument_group("prediction log (off unless --prediction-log; docs/monitoring.md)")
    group.add_argument(
        "--prediction-log",
        type=Path,
        help="append a JSONL line per instance of sampled predict/classify/regress requests here "
        "(request id, version, class, confidence, latency)",
    )
    group.add_argument(
        "--prediction-log-sample", type=_fraction, default=0.1, help="the fraction of requests logged (0 to 1)"
    )
    group.add_argument(
        "--prediction-log-max-bytes",
        type=positive_int,
        default=16 * 1024 * 1024,
        help="size at which the log is rotated to <path>.1, <path>.2...",
    )
    group.add_argument(
        "--prediction-log-backups", type=_non_negative_int, default=3, help="rotated files kept besides the log"
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


def models_from(args) -> tuple[ModelConfig, ...]:
    """--model-base-path's one model, or none when a model config file names the models."""
    if args.model_config_file is not None:
        try:
            modelconfig.read(args.model_config_file)  # refused at the start, as TF Serving refuses it
        except modelconfig.ConfigError as err:
            raise JobError(str(err)) from None
        if args.model_base_path is not None:
            log.info("the models come from %s: --model-base-path and --model-name are ignored", args.model_config_file)
        return ()
    if args.model_base_path is None:
        raise JobError("give --model-base-path (one model) or --model-config-file (TF Serving's model config)")
    if not args.model_base_path.is_dir():
        raise JobError(
            f"model base path {args.model_base_path} is not a folder: promote a model first "
            f"(make local), or point --model-base-path at <work>/models/{args.model_name}"
        )
    return (modelconfig.single(args.model_name, args.model_base_path.resolve()),)


def prediction_log_from(args) -> PredictionLog | None:
    if args.prediction_log is None:
        return None
    path = args.prediction_log
    if path.is_dir():
        raise JobError(f"--prediction-log {path} is a folder: give a file path (e.g. {path}/predictions.jsonl)")
    try:
        sample, backups = args.prediction_log_sample, args.prediction_log_backups
        return PredictionLog(path, sample, args.prediction_log_max_bytes, backups)
    except OSError as err:
        raise JobError(f"cannot write the prediction log {path}: {err.strerror or err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = models_from(args)
    check_can_listen(args.host, args.port)  # before the slow TensorFlow import
    prediction_log = prediction_log_from(args)
    import uvicorn
    import uvloop

    from jobs.core.cpus import configure_threads, serving_intra_op_threads

    intra = args.tensorflow_intra_op_parallelism or serving_intra_op_threads()
    threads = configure_threads(intra, args.tensorflow_inter_op_parallelism)
    log.info("TensorFlow runs an op on %d CPU thread(s)", threads)
    limits = limits_from(args)
    if prediction_log is not None:
        log.info("logging %g of the predictions to %s", args.prediction_log_sample, prediction_log.path)
    settings = Settings(
        models=models,
        model_config_file=args.model_config_file.resolve() if args.model_config_file else None,
        poll_seconds=args.poll_seconds,
        max_batch=args.max_batch,
        threads=args.threads,
        limits=limits,
        load_retries=args.load_retries,
        load_retry_seconds=args.load_retry_seconds,
        cors=args.rest_api_enable_cors_support,
        prediction_log=prediction_log,
    )
    app = create_app(settings)
    stats = ConnectionStats()
    app.metrics.watch(lambda: app.scheduler.queued_pixels if app.scheduler else 0, lambda: stats.open)
    app.requests_in_flight = lambda: stats.requests
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
        proxy_headers=False,  # no proxy's client address is used: no middleware per request
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn's start and stop notes (on its logger "uvicorn.error") repeat ours; its warnings show.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    source = args.model_config_file or f"{args.model_name} from {models[0].base_path}"
    log.info("serving %s on http://%s:%d", source, args.host, args.port)
    try:
        uvloop.run(server.serve())
    except (OSError, SystemExit) as err:  # uvicorn exits when it cannot bind
        reason = getattr(err, "strerror", None) or "see the log above"
        raise JobError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    if not server.started:
        raise JobError(f"the server did not start on {args.host}:{args.port} (see the log above)")
    return 0
