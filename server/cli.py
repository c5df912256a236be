"""`embedserve serve ...` (also `python -m embedserve.server serve ...`), `embedserve quantize ...`, `embedserve bench ...`."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenization runs in our own threads


def _setting_help(field: str, extra: str = "") -> str:
    """An option's help from the setting it overrides: what it does, its default, its variable."""
    from embedserve.server.config.settings import Settings

    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    text = (info.description or "").rstrip(".") + extra
    if default in (None, []) and "default" in text:  # the description says what happens by default
        return f"{text} (EMBEDSERVE_{field.upper()})".replace("%", "%%")
    shown = "none" if default in (None, []) else str(default).lower() if isinstance(default, bool) else default
    return f"{text} (default: {shown}; EMBEDSERVE_{field.upper()})".replace("%", "%%")


def _serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP",
        description="Serve embedding and reranking models over HTTP. Every option overrides its EMBEDSERVE_ "
        "variable; the rest of the settings (auth, limits, timeouts) are variables only: see .env.example.",
    )
    p.add_argument("--host", help=_setting_help("host"))
    p.add_argument("--port", type=int, help=_setting_help("port"))
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="[ID=]SOURCE",
        help=_setting_help("models", "; repeatable: one model a flag"),
    )
    p.add_argument("--models", dest="models_file", metavar="FILE", help=_setting_help("models_file"))
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help=_setting_help("device"))
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], help=_setting_help("dtype"))
    p.add_argument("--threads", "--torch-threads", type=int, metavar="N", help=_setting_help("threads"))
    p.add_argument("--max-batch-tokens", type=int, metavar="N", help=_setting_help("max_batch_tokens"))
    p.add_argument("--max-batch-size", type=int, metavar="N", help=_setting_help("max_batch_size"))
    p.add_argument("--max-wait-ms", type=float, metavar="MS", help=_setting_help("max_wait_ms"))
    p.add_argument("--max-queue-tokens", type=int, metavar="N", help=_setting_help("max_queue_tokens"))
    p.add_argument("--max-queue-items", type=int, metavar="N", help=_setting_help("max_queue_items"))
    p.add_argument("--batch-workers", type=int, metavar="N", help=_setting_help("batch_workers"))
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help=_setting_help("log_level"))
    p.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=None,
        help=_setting_help("access_log", "; this flag turns it off"),
    )
    p.add_argument(
        "--keep-serving-failed-models",
        action="store_true",
        default=None,
        help=_setting_help("keep_serving_failed_models"),
    )
    return p


def _draining_server_class():  # type: ignore[no-untyped-def]
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """On SIGTERM/SIGINT, readiness turns false at once; uvicorn then stops accepting, lets
        in-flight requests finish (up to the grace period), and the app drains its batchers.
        A SIGTERM answered by a clean drain exits 0 (uvicorn would re-raise it: exit -15)."""

        def handle_exit(self, sig, frame) -> None:  # type: ignore[no-untyped-def]
            host = getattr(getattr(self.config.app, "state", None), "host", None)
            if host is not None:
                host.draining = True
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    return DrainingServer


def settings_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """`serve`'s flags over the EMBEDSERVE_ environment: the one way from a command line to Settings.
    Raises ConfigError naming each bad variable, never its value."""
    from pydantic import ValidationError

    from embedserve.server.config.errors import settings_error
    from embedserve.server.config.settings import Settings

    try:
        return Settings(**{k: v for k, v in vars(args).items() if k != "command" and v is not None})
    except ValidationError as exc:
        raise settings_error(exc) from None


def parse_serve(argv: Sequence[str]) -> argparse.Namespace:
    """Parses `serve`'s flags alone (what follows `embedserve serve`)."""
    parser = argparse.ArgumentParser(prog="embedserve")
    _serve_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before any model loads: a port in use fails at once, in one line."""
    from embedserve.server.config.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


EXIT_MODEL_FAILED = 3


def uvicorn_config(app, settings, port: int):  # type: ignore[no-untyped-def]
    """How uvicorn runs the app: our logging, our HTTP protocol (header deadline, connection cap, a
    stop that answers requests already on the wire, the overload door), the shutdown grace."""
    import uvicorn

    from embedserve.server.http.protocol import protocol_class

    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        http=protocol_class(
            settings.header_read_timeout, settings.connection_limit(), getattr(app.state, "door", None)
        ),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


def serve(args: argparse.Namespace, *, prepare_only: bool = False) -> None:
    """Checks what can be checked before loading (settings, files, model folders, the backends'
    packages, the port) and exits 1 with one line per problem; then serves (or, `prepare_only`, prepares). A model that fails to load
    stops the server with exit status 3, unless --keep-serving-failed-models."""
    import yaml

    from embedserve.models.preflight import problems
    from embedserve.server.app import create_app
    from embedserve.server.collector import freeze_loaded_objects
    from embedserve.server.config.errors import ConfigError
    from embedserve.server.malloc import fix_mmap_threshold
    from embedserve.server.telemetry.logs import configure_logging, flush_logs

    try:
        settings = settings_from(args)
        configure_logging(settings.log_level, settings.log_json)
        app = create_app(settings)
        host = app.state.host
        if found := [problem for spec in host.registry.specs for problem in problems(spec)]:
            raise ConfigError("; ".join(found))
        if prepare_only:
            sys.exit(prepare(host.registry.specs))
        sock = listening_socket(settings.host, settings.port)
    except (ValueError, OSError, yaml.YAMLError) as exc:  # ConfigError and pydantic's errors are ValueErrors
        flush_logs()
        sys.exit(f"embedserve: configuration error: {exc}")
    if any(spec.backend in ("torch", "auto") for spec in host.registry.specs):  # before they load
        fix_mmap_threshold(settings.malloc_mmap_threshold)
    server = _draining_server_class()(uvicorn_config(app, settings, sock.getsockname()[1]))
    host.on_loaded = freeze_loaded_objects
    failed: list[str] = []
    if not settings.keep_serving_failed_models:

        def stop(model_id: str) -> None:
            failed.append(model_id)
            host.draining = True
            server.should_exit = True

        host.on_load_failure = stop
    server.run(sockets=[sock])
    if failed:
        flush_logs()
        print(
            f"embedserve: model {failed[0]!r} failed to load: {host.errors.get(failed[0])} "
            "(--keep-serving-failed-models serves the others)",
            file=sys.stderr,
        )
        sys.exit(EXIT_MODEL_FAILED)


def prepare(specs: Sequence[Any]) -> int:
    """`embedserve prepare [serve's flags]`: each model's backend resolved (an `auto` model exported, once), one line
    each, then exit 0: what an image's build step runs so its containers start without exporting."""
    from embedserve.quantize.served_export import resolve_backend

    for spec in specs:
        resolved = resolve_backend(spec)
        print(f"{spec.id}: {resolved.backend} from {resolved.source}")
    return 0


def bench(argv: Sequence[str]) -> int:
    """`embedserve bench ARGS` is `python -m bench ARGS`: bench/ (its load generator, peers and results) lives in a
    source checkout, beside the installed packages, not in them."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").is_file():
        print("embedserve bench runs from a source checkout (bench/ is not installed): clone it and `make bench`",
              file=sys.stderr)  # fmt: skip
        return 2
    sys.path.insert(0, str(root))
    from bench.run import main as run_bench

    run_bench(list(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own options, all passed on
        sys.exit(bench(argv[1:]))
    if argv[:1] == ["prepare"]:  # serve's flags: prepares what serving them would need, and exits
        serve(parse_serve(argv[1:]), prepare_only=True)
    parser = argparse.ArgumentParser(prog="embedserve", description="Text embedding and reranking server.")
    sub = parser.add_subparsers(dest="command", required=True)
    subcommands = {"serve": _serve_parser(sub)}
    sub.add_parser("bench", help="benchmark against the peers, as `python -m bench` (from a source checkout)")
    sub.add_parser(
        "prepare", help="with serve's flags: make the models' ONNX exports (backend auto) now, and exit", add_help=False
    )
    from embedserve.quantize.cli import add_parser as add_quantize_parser  # light: its heavy imports happen in run()

    subcommands["quantize"] = add_quantize_parser(sub)
    from embedserve.server.corpus.cli import add_parser as add_embed_parser  # light, as quantize's

    subcommands["embed"] = add_embed_parser(sub)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top-level parser and print its usage, not the subcommand's
        subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "serve":
        serve(args)
    else:
        sys.exit(args.handler(args))


if __name__ == "__main__":
    main()
