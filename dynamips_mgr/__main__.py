"""Command line: ``dynamips-mgr`` / ``python -m dynamips_mgr``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys

from aiohttp import web

from . import __version__
from .app import create_app
from .config import Config, ConfigError
from .web.routing import STATE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dynamips-mgr",
        description=("GNS3 1.5 compatible REST server for the Dynamips router emulator"),
    )
    parser.add_argument("--host", help="address to bind the API to (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="API port (default 3080)")
    parser.add_argument(
        "--config",
        help="INI file (default ./dynamips_mgr.ini, then ~/.config/dynamips_mgr/dynamips_mgr.ini)",
    )
    parser.add_argument(
        "-L",
        "--local",
        action="store_true",
        default=None,
        help="local mode: allow project paths, config reload and shutdown",
    )
    parser.add_argument(
        "-A",
        "--allow",
        action="store_true",
        default=None,
        help="allow remote console connections (consoles on all addresses)",
    )
    parser.add_argument("-d", "--debug", action="store_true", default=None, help="debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    parser.add_argument("--log", help="log to this file instead of stderr")
    parser.add_argument("--version", action="version", version=f"dynamips-mgr {__version__}")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    chosen = {
        "host": args.host,
        "port": args.port,
        "local": args.local,
        "allow_remote_console": args.allow,
        "debug": args.debug,
    }
    return {("Server", k): v for k, v in chosen.items() if v is not None}


def _watch_children_with_pidfds() -> None:
    """Python 3.11 waits for each child process in a thread of its own (one per dynamips,
    ~16 KiB each); a pidfd in the event loop does it without threads (3.12's default)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an old kernel or a seccomp policy
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def _release_start_up_memory() -> None:
    """Hand back to the system what imports and schema compilation left unused."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


async def serve(config: Config) -> None:
    _watch_children_with_pidfds()
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server("host"), config.server("port"))
    await site.start()
    _release_start_up_memory()
    logging.getLogger(__name__).info(
        "dynamips-mgr %s serving on http://%s:%s",
        __version__,
        config.server("host"),
        config.server("port"),
    )
    stop = app[STATE].shutdown
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()  # stops accepting, then closes every project and hypervisor


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = Config.load(args.config, overrides(args))
    except ConfigError as err:
        print(f"dynamips-mgr: {err}", file=sys.stderr)
        sys.exit(2)
    level = (
        logging.ERROR if args.quiet else (logging.DEBUG if config.server("debug") else logging.INFO)
    )
    logging.basicConfig(
        level=level, filename=args.log, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(config))
    except OSError as err:
        print(
            f"dynamips-mgr: cannot serve on {config.server('host')}:{config.server('port')}: {err}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
