"""The ``chatbridge`` command line.

Errors end as one plain line on stderr and a non-zero exit, never a traceback
(``CHATBRIDGE_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from bots.logs import configure_logging
from core.errors import ChatbridgeError, ConfigError, StoreError
from core.model.faults import redact

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatbridge", description="Large language models in Slack, Telegram and the terminal."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser("chat", help="interactive terminal conversation")
    chat.add_argument("--conversation", default="default", metavar="NAME")

    ask = sub.add_parser("ask", help="one turn: print the reply and exit")
    ask.add_argument("--conversation", default="default", metavar="NAME")
    ask.add_argument("--image", action="append", default=[], metavar="PATH")
    ask.add_argument("--json", action="store_true", help="print a JSON object")
    ask.add_argument("text", nargs="+", metavar="TEXT")

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="migrate to the newest schema (or REV)")
    up.add_argument("revision", nargs="?", default="head", metavar="REV")
    down = db_sub.add_parser("downgrade", help="migrate down to REV ('base' empties it)")
    down.add_argument("revision", metavar="REV")
    db_sub.add_parser("current", help="print the database's revision")

    sub.add_parser("check", help="check settings, database, model and platform tokens")

    usage = sub.add_parser("usage", help="turns and tokens per user, conversation or model")
    usage.add_argument("--since", default="7d", help="7d, 12h, 30m, 2w or a date (default 7d)")
    usage.add_argument("--by", choices=("user", "conversation", "model"), default="user")

    outbox = sub.add_parser("outbox", help="replies a platform would not take: list, re-send")
    outbox.add_argument("outbox_command", choices=("list", "retry"), metavar="list|retry")
    outbox.add_argument("--platform", choices=("slack", "telegram"), default=None)

    tools = sub.add_parser("tools", help="the tools a profile may call")
    tools.add_argument("tools_command", choices=("list",), metavar="list")
    tools.add_argument("--profile", default=None, metavar="NAME")

    local = sub.add_parser("local-model", help="run the bundled local model server")
    local.add_argument("--port", type=int, default=8080)

    slack = sub.add_parser("slack", help="run the Slack bot")
    slack.add_argument("--port", type=int, default=3000)
    telegram = sub.add_parser("telegram", help="run the Telegram bot")
    telegram.add_argument("--webhook", action="store_true")
    telegram.add_argument("--port", type=int, default=8443)
    return parser


async def _db(args: argparse.Namespace) -> int:
    from bots import db
    from bots.settings import load_settings

    settings = load_settings(model_required=False)
    engine = db.create_engine(settings.database_url)
    try:
        if args.db_command == "upgrade":
            await db.upgrade(engine, args.revision)
        elif args.db_command == "downgrade":
            await db.downgrade(engine, args.revision)
        print(await db.current(engine) or "none (empty database)")
    except (SQLAlchemyError, OSError) as err:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"database {where}: {type(err).__name__}",
                         user_message=f"Cannot use the database {where}: "
                         f"{type(err).__name__}.") from err
    finally:
        await engine.dispose()
    return 0


def _local_model(port: int) -> int:
    import subprocess

    from bots.local_model import server_command

    print(f"local model (SmolLM2-135M-Instruct) on http://127.0.0.1:{port}/v1 — Ctrl-C stops",
          file=sys.stderr)
    print(f"use it with CHATBRIDGE_MODEL_BASE_URL=http://127.0.0.1:{port}/v1 "
          "CHATBRIDGE_MODEL_API_KEY= CHATBRIDGE_MODEL=smollm2", file=sys.stderr)
    return subprocess.call(server_command(port))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "db":
        return asyncio.run(_db(args))
    if args.command == "local-model":
        return _local_model(args.port)
    from bots.settings import load_settings

    settings = load_settings(model_required=args.command not in ("usage", "outbox", "tools"))
    if args.command == "tools":
        from bots.tools import run_tools_list

        return asyncio.run(run_tools_list(settings, profile=args.profile))
    if args.command == "check":
        from bots.check import run_check

        return asyncio.run(run_check(settings))
    if args.command == "usage":
        from bots.usage import run_usage

        return asyncio.run(run_usage(settings, since=args.since, by=args.by))
    if args.command == "outbox":
        from bots.outbox import run_outbox

        return asyncio.run(run_outbox(settings, action=args.outbox_command,
                                      platform=args.platform))
    if args.command == "slack":
        from bots.slack import main as slack_main

        return slack_main(settings, port=args.port)
    if args.command == "telegram":
        from bots.telegram import main as telegram_main

        return telegram_main(settings, webhook=args.webhook, port=args.port)
    if args.command == "ask":
        from bots.console import run_ask

        return asyncio.run(run_ask(settings, conversation=args.conversation,
                                   text=" ".join(args.text), image_paths=args.image,
                                   as_json=args.json))
    from bots.console import run_chat

    return asyncio.run(run_chat(settings, conversation=args.conversation))


def _secrets() -> tuple[str, ...]:
    """Secret values from the environment and ``.env``, to keep out of error lines."""
    from dotenv import dotenv_values

    from bots.settings import SECRET_NAMES

    found = [os.environ.get(n) for n in SECRET_NAMES]
    try:
        dotenv = dotenv_values(".env")
        found += [dotenv.get(n) for n in SECRET_NAMES]
    except OSError:
        pass
    return tuple(v for v in found if v)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    secrets = _secrets()
    configure_logging(os.environ.get("CHATBRIDGE_LOG_LEVEL", "WARNING"),
                      os.environ.get("CHATBRIDGE_LOG_FORMAT", "plain"), secrets)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except ChatbridgeError as err:
        print(f"chatbridge: {redact(err.user_message, *secrets)}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except Exception as err:
        if os.environ.get("CHATBRIDGE_DEBUG"):
            raise
        print(f"chatbridge: internal error: {type(err).__name__}: "
              f"{redact(str(err), *secrets)} (CHATBRIDGE_DEBUG=1 shows a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
