"""Command line, mautrix conventions: ``-c config.yaml -r registration.yaml [-g]``.

``-g`` writes the registration (and fresh tokens into the config) and exits. Without it the bridge runs;
on a first run with neither file present it writes both with embedded defaults and says which one line
to add to homeserver.yaml, so the quick start is a single command.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from . import __version__
from .config import Config, ConfigError, write_config_values
from .log import setup_logging
from .registration import build_registration

log = logging.getLogger("telebridge")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m telebridge", description="Matrix ⇄ phone network bridge")
    parser.add_argument(
        "-c", "--config", type=Path, default=Path("config.yaml"), help="config file (default: %(default)s)"
    )
    parser.add_argument(
        "-r",
        "--registration",
        type=Path,
        default=Path("registration.yaml"),
        help="registration file (default: %(default)s)",
    )
    parser.add_argument(
        "-g", "--generate-registration", action="store_true", help="write the registration and exit"
    )
    parser.add_argument("--version", action="version", version=f"telebridge {__version__}")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f"telebridge: {message}", file=sys.stderr)
    return 2


def generate(config_path: Path, registration_path: Path) -> Config:
    """Fresh tokens into the config (written back, comments kept) and the registration file beside it."""
    config = Config.load(config_path if config_path.exists() else None).with_generated_tokens()
    write_config_values(
        config_path,
        {
            "appservice.as_token": config["appservice.as_token"],
            "appservice.hs_token": config["appservice.hs_token"],
        },
    )
    config = Config.load(config_path)
    registration = build_registration(config)
    tmp = registration_path.with_name(registration_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        YAML().dump(registration, f)
    tmp.chmod(0o600)
    tmp.replace(registration_path)
    return config


def check_registration(config: Config, registration_path: Path) -> None:
    try:
        loaded: Any = YAML(typ="safe").load(registration_path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as e:
        raise ConfigError(f"registration file {registration_path} cannot be read: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"registration file {registration_path} is not a mapping")
    for key, cfg_key in (("as_token", "appservice.as_token"), ("hs_token", "appservice.hs_token")):
        if loaded.get(key) != config[cfg_key]:
            raise ConfigError(
                f"{cfg_key}: does not match {key} in {registration_path}; regenerate both with -g "
                "(and restart the homeserver)"
            )


def print_homeserver_hint(registration_path: Path) -> None:
    print(
        "telebridge: add this line to homeserver.yaml and restart the homeserver:\n"
        f"    app_service_config_files: [{registration_path.resolve()}]",
        file=sys.stderr,
    )


async def run(config: Config) -> None:
    from .bridge import Bridge

    bridge = Bridge(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    # Everything built so far (modules, config, mautrix's classes, the database pools) lives as long as the
    # process. Left in the collector's generations, each full collection walks it all again: 16 to 21 ms
    # pauses, about one a second under load, a large share of the SMS p99 (benchmarks/README.md). Frozen,
    # a full collection only walks what was made since (~0.5 ms); garbage is still freed as before.
    gc.freeze()
    try:
        await stop.wait()
    finally:
        log.info("Stopping")
        await bridge.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.generate_registration:
            generate(args.config, args.registration)
            print(
                f"telebridge: wrote {args.registration} and stored its tokens in {args.config}",
                file=sys.stderr,
            )
            print_homeserver_hint(args.registration)
            return 0
        first_run = not args.config.exists()
        config = Config.load(args.config if not first_run else None)
        if first_run or not config.tokens_generated or not args.registration.exists():
            config = generate(args.config, args.registration)
            print(f"telebridge: first run: wrote {args.config} and {args.registration}", file=sys.stderr)
            print_homeserver_hint(args.registration)
        check_registration(config, args.registration)
    except ConfigError as e:
        return fail(f"configuration error: {e}")
    except OSError as e:  # a config or registration file that cannot be written (no such folder, no rights)
        where = f" {e.filename}" if e.filename else ""
        return fail(f"cannot write{where}: {e.strerror or e}")
    setup_logging(config["logging.level"])
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run(config))
    except OSError as e:
        return fail(f"cannot start: {e.strerror or e}")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
