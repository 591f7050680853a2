"""The `gateway` command: serve, demo, check-config. Exit codes: 0 ok, 2 bad usage or config,
1 anything else."""

import argparse
import logging
import os
import sys
from pathlib import Path

from config.environment import stray_variables
from config.errors import ConfigError
from config.limits import load_limits
from config.settings import Settings, load_settings
from gateway.proxy.forward.egress_proxy import egress_problems

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="A usage-metering gateway for OpenAI-style model APIs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Without GATEWAY_REDIS_URL it starts "
        "its own Redis in GATEWAY_DATA_DIR.",
    )
    serve.add_argument("--config", type=Path, help="TOML settings and catalog (or GATEWAY_CONFIG)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")

    demo = sub.add_parser(
        "demo",
        help="try it: embedded Redis, a simulated provider, a demo key",
        description="Start everything needed to try the gateway on this "
        "machine: embedded Redis, a SIMULATED provider on loopback, a demo "
        "account with credits and a key.",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)

    check = sub.add_parser(
        "check-config",
        help="validate settings and catalog files",
        description="Validate files; exit 0, or 2 with every problem as file:line: what is wrong.",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if args.command == "check-config":
            return check_config(args.paths)
        if args.command == "demo":
            from gateway.runtime.demo import run_demo

            return run_demo(args.host, args.port)
        overrides = {
            k: v
            for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
            if v is not None
        }
        # Flags win over GATEWAY_* variables, which win over the file.
        settings = load_settings(args.config).model_copy(update=overrides)
        load_limits(settings.limits_file)  # refuse a bad rate-limit file before starting
        problems = egress_problems(settings.providers)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return EXIT_USAGE
        from gateway.runtime.serve import run_serve

        return run_serve(settings)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def check_config(paths: list[Path]) -> int:
    """Settings-and-catalog files and rate-limit files alike (a file with [[limits]] is the
    latter); a settings file's `limits_file` is checked too, and so is the environment: a
    `GATEWAY_*` variable that names no setting is a problem (Kubernetes' service links are only
    noted)."""
    problems: list[str] = []
    for stray in stray_variables(os.environ, Settings.model_fields):
        if stray.service_link:
            print(f"note: environment: {stray.describe()}", file=sys.stderr)
        else:
            problems.append(f"environment: {stray.describe()}")
    for path in paths:
        try:
            if _is_limits_file(path):
                load_limits(path)
            else:
                settings = load_settings(path)
                problems.extend(egress_problems(settings.providers))
                if settings.limits_file is not None:
                    load_limits(settings.limits_file)
        except ConfigError as exc:
            problems.extend(str(p) for p in exc.problems)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_USAGE
    print(f"ok: {len(paths)} file(s) valid")
    return EXIT_OK


def _is_limits_file(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.strip().startswith("[[limits]]") for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
