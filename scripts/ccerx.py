"""`ccerx`: the one command in front of the exchange (engine, gateway, benchmarks, simulation)."""
from __future__ import annotations

import argparse
import importlib
import os
import select
import sys

# Each subcommand lives in its own module with add_parser(subparsers) -> sets args.run.
SUBCOMMAND_MODULES = (
    "ccerx.scripts.cmd_replay",
    "ccerx.scripts.cmd_gen_flow",
    "ccerx.scripts.cmd_convert",
    "ccerx.scripts.cmd_bench",
    "ccerx.scripts.cmd_simulate",
    "ccerx.scripts.cmd_serve",
    "ccerx.scripts.cmd_cluster",
    "ccerx.scripts.cmd_operator",
    "ccerx.scripts.cmd_ledger",
    "ccerx.scripts.cmd_recover",
    "ccerx.scripts.cmd_bench_gateway",
    "ccerx.scripts.cmd_surveil",
    "ccerx.scripts.cmd_audit",
)


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that refuses what it does not know itself, so a bad flag shows
    that subcommand's usage (`ccerx operator state --bogus` prints the usage of `ccerx
    operator state`), not the top-level one's. Subcommands' own subcommands inherit it."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("ccerx")
    except PackageNotFoundError:      # running from a checkout that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccerx", description="CCER carbon-credit exchange: "
                                     "matching engine, FIX gateway, replay, benchmarks, simulation")
    from ccerx.engine.native import status    # compiled core or pure Python
    parser.add_argument("--version", action="version", version=f"ccerx {version()} ({status()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=SubcommandParser)
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (a broken pipe elsewhere, a
    socket say, is an error like any other)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no real file behind stdout (tests)
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ccerx.engine.durable.recovery import RecoveryRefused
    from ccerx.scripts.paths import os_error_text
    try:
        return args.run(args) or 0
    except (OSError, RecoveryRefused) as err:
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            # `ccerx ... | head`: the reader has all it wanted; no error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        # files that cannot be read or written, a data directory that must not be recovered:
        # the user's to fix, so a clear line rather than a traceback
        text = os_error_text(err) if isinstance(err, OSError) else str(err)
        print(f"ccerx {args.command}: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
