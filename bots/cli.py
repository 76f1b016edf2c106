"""The ``chatbridge`` command line.

Errors end as one plain line on stderr and a non-zero exit, never a traceback
(``CHATBRIDGE_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from bots.envcheck import check_debug, check_log
from bots.logs import configure_logging
from core.errors import ChatbridgeError, ConfigError, InputError, StoreError
from core.model.faults import redact

__all__ = ["main"]

# numpy's BLAS (knowledge-base vector search) would start a thread per core for each
# product; called from the event loop on a shared machine, that costs far more than it saves.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# Exit codes, the same in every command (README "Exit codes").
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, but not for flags or options without a help text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or not action.help:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatbridge", description="Large language models in Slack, Telegram and the terminal.",
        epilog="Exit codes: 0 done; 1 a service failed or gave no answer (model, database, "
        "Slack/Telegram) or `check` found a problem; 2 the command line, a setting or a file "
        "you named is wrong; 130 interrupted (Ctrl-C).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Formatter)

    def conversation(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--conversation", default="default", metavar="NAME",
                         help="the conversation to continue, kept in the database by name")

    def profile(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--profile", default=None, metavar="NAME",
                         help="answer as this profile of the config file (its prompt, model, "
                         "knowledge bases) instead of the default one")

    chat = command("chat", "interactive terminal conversation (Ctrl-C stops an answer, "
                   "Ctrl-C at the prompt or Ctrl-D leaves)")
    conversation(chat)
    profile(chat)

    ask = command("ask", "one turn: print the reply and exit")
    conversation(ask)
    profile(ask)
    ask.add_argument("--image", action="append", default=[], metavar="PATH",
                     help="attach an image file (PNG, JPEG, WebP, GIF, BMP, TIFF); repeat "
                     "for several")
    ask.add_argument("--file", action="append", default=[], metavar="PATH",
                     help="attach a document (PDF, DOCX, PPTX, XLSX, TXT, Markdown, CSV, "
                     "HTML); repeat for several")
    ask.add_argument("--json", action="store_true",
                     help='print a JSON object: {"reply", "conversation", "model", "usage", '
                     '"latency_ms", "partial"}, or {"error", "kind", ...} on failure')
    ask.add_argument("text", nargs="+", metavar="TEXT", help="the message")

    db = command("db", "database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="migrate to the newest schema (or REV)")
    up.add_argument("revision", nargs="?", default="head", metavar="REV",
                    help="revision to migrate to (default: head, the newest)")
    down = db_sub.add_parser("downgrade", help="migrate down to REV ('base' empties it)")
    down.add_argument("revision", metavar="REV", help="revision to migrate to, or base")
    db_sub.add_parser("current", help="print the database's revision")

    command("check", "check settings, database, model and platform tokens")

    kb = command("kb", "knowledge bases that profiles answer from: add, list, remove, search")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")

    def kb_name(cmd: argparse.ArgumentParser, *, required: bool, many: bool = False) -> None:
        cmd.add_argument("--kb", required=required, action="append", metavar="NAME",
                         help="the knowledge base" + (" (repeat to search several)"
                                                      if many else ""))

    kb_add = kb_sub.add_parser("add", formatter_class=_Formatter,
                               help="index files, folders (recursively) and web pages; only "
                               "what changed is indexed again")
    kb_name(kb_add, required=True)
    kb_add.add_argument("--language", default="english",
                        help="the documents' language (PostgreSQL text-search configuration; "
                        "used when the base is created)")
    kb_add.add_argument("inputs", nargs="+", metavar="PATH|URL",
                        help="Markdown, text, HTML, PDF or DOCX files, folders, or URLs")
    kb_list = kb_sub.add_parser("list", formatter_class=_Formatter,
                                help="the knowledge bases (with --kb: its documents)")
    kb_name(kb_list, required=False)
    kb_rm = kb_sub.add_parser("remove", formatter_class=_Formatter,
                              help="remove a knowledge base, or only the documents named")
    kb_name(kb_rm, required=True)
    kb_rm.add_argument("sources", nargs="*", metavar="PATH|URL",
                       help="documents to remove (default: the whole base)")
    kb_search = kb_sub.add_parser("search", formatter_class=_Formatter,
                                  help="ranked passages with their scores, for tuning")
    kb_name(kb_search, required=True, many=True)
    kb_search.add_argument("--limit", type=int, default=5, help="how many passages")
    kb_search.add_argument("--mode", choices=("hybrid", "fulltext", "dense"), default="hybrid",
                           help="hybrid fuses full-text and dense rankings (dense needs "
                           "CHATBRIDGE_EMBEDDING_MODEL)")
    kb_search.add_argument("text", nargs="+", metavar="TEXT", help="the question")

    usage = command("usage", "turns and tokens per user, conversation or model")
    usage.add_argument("--since", default="7d", help="7d, 12h, 30m, 2w or a date")
    usage.add_argument("--by", choices=("user", "conversation", "model"), default="user",
                       help="what each line counts")

    prune = command("prune", "delete messages older than AGE, and what only they used")
    prune.add_argument("--older-than", required=True, metavar="AGE",
                       help="90d, 12w, 36h or a date (YYYY-MM-DD)")
    prune.add_argument("--dry-run", action="store_true",
                       help="count what would be deleted; delete nothing")
    prune.add_argument("--keep-summaries", action="store_true",
                       help="keep the rolling summaries of conversations that lose messages")
    forget = command("forget", "delete one person's messages, attachments, feedback and usage")
    forget.add_argument("--user", required=True, metavar="PLATFORM:ID",
                        help="e.g. slack:U012AB3CD or telegram:123456789")

    outbox = command("outbox", "replies a platform would not take: list, re-send")
    outbox.add_argument("outbox_command", choices=("list", "retry"), metavar="list|retry",
                        help="list the pending replies, or send them again")
    outbox.add_argument("--platform", choices=("slack", "telegram"), default=None,
                        help="only this platform's replies (default: both)")

    tools = command("tools", "the tools a profile may call: built-in and from MCP servers")
    tools.add_argument("tools_command", choices=("list",), metavar="list",
                       help="list them, with where each comes from and what it does")
    tools.add_argument("--profile", default=None, metavar="NAME",
                       help="the profile whose tools to list (default: the default profile)")

    export = command("export", "print whole conversations (authors, times, staff "
                     "messages, tool calls)")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--conversation", type=int, metavar="ID", help="one conversation")
    which.add_argument("--scope", metavar="KEY", help="every conversation under this key")
    which.add_argument("--user", metavar="PLATFORM:ID",
                       help="every conversation this person wrote in (telegram:111…)")
    export.add_argument("--format", choices=("md", "jsonl"), default="md",
                        help="Markdown, or one JSON object per message")

    command("handoffs", "list the open handoffs to staff, with their age")

    local = command("local-model", "run the bundled local model server in the foreground")
    local.add_argument("--port", type=int, default=8080, help="loopback port to listen on")

    slack = command("slack", "run the Slack bot (Socket Mode when SLACK_APP_TOKEN is set)")
    slack.add_argument("--port", type=int, default=3000,
                       help="HTTP mode: port for POST /slack/events, /healthz, /metrics")
    telegram = command("telegram", "run the Telegram bot (long polling, or --webhook)")
    telegram.add_argument("--webhook", action="store_true",
                          help="serve POST /telegram/webhook instead of long polling")
    telegram.add_argument("--port", type=int, default=8443,
                          help="webhook mode: port to listen on")
    return parser


async def _db(args: argparse.Namespace) -> int:
    from alembic.util import CommandError

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
    except CommandError as err:  # an unknown revision, or one in the wrong direction
        raise ConfigError(f"cannot {args.db_command} to {args.revision!r}: "
                          f"{str(err).rstrip('.')} (revisions run from base to {db.HEAD}; "
                          "head is the newest)") from err
    except (SQLAlchemyError, OSError) as err:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"database {where}: {type(err).__name__}",
                         user_message=f"Cannot use the database {where}: "
                         f"{type(err).__name__}.") from err
    finally:
        await engine.dispose()
    return OK


def _local_model(port: int) -> int:
    from bots.local_model import run_foreground

    print(f"local model (SmolLM2-135M-Instruct) on http://127.0.0.1:{port}/v1 — Ctrl-C stops",
          file=sys.stderr)
    print(f"use it with CHATBRIDGE_MODEL_BASE_URL=http://127.0.0.1:{port}/v1 "
          "CHATBRIDGE_MODEL_API_KEY= CHATBRIDGE_MODEL=smollm2", file=sys.stderr)
    return run_foreground(port)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "db":
        return asyncio.run(_db(args))
    if args.command == "local-model":
        return _local_model(args.port)
    from bots.settings import load_settings

    settings = load_settings(model_required=args.command not in (
        "usage", "outbox", "tools", "prune", "forget", "kb", "export", "handoffs"))
    if args.command == "kb":
        from bots.kb import run_kb

        return run_kb(settings, args)
    if getattr(args, "profile", None) is not None and args.profile not in settings.profiles:
        known = ", ".join(sorted(settings.profiles))
        raise ConfigError(f"no profile {args.profile!r} (profiles: {known}; they are the "
                          "[profiles.NAME] tables of the config file)")
    if args.command == "tools":
        from bots.tools import run_tools_list

        return asyncio.run(run_tools_list(settings, profile=args.profile))
    if args.command == "check":
        from bots.check import run_check

        return asyncio.run(run_check(settings))
    if args.command == "usage":
        from bots.usage import run_usage

        return asyncio.run(run_usage(settings, since=args.since, by=args.by))
    if args.command == "prune":
        from bots.lifecycle import run_prune

        return asyncio.run(run_prune(settings, older_than=args.older_than,
                                     dry_run=args.dry_run, keep_summaries=args.keep_summaries))
    if args.command == "forget":
        from bots.lifecycle import run_forget

        return asyncio.run(run_forget(settings, user=args.user))
    if args.command == "outbox":
        from bots.outbox import run_outbox

        return asyncio.run(run_outbox(settings, action=args.outbox_command,
                                      platform=args.platform))
    if args.command == "export":
        from bots.transcripts import run_export

        return asyncio.run(run_export(settings, conversation=args.conversation,
                                      scope=args.scope, user=args.user, fmt=args.format))
    if args.command == "handoffs":
        from bots.transcripts import run_handoffs

        return asyncio.run(run_handoffs(settings))
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
                                   file_paths=args.file, as_json=args.json,
                                   profile=args.profile))
    from bots.console import run_chat

    return asyncio.run(run_chat(settings, conversation=args.conversation,
                                profile=args.profile))


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


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _env_and_dotenv() -> dict[str, str]:
    from dotenv import dotenv_values

    try:
        env = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    except OSError:
        env = {}
    env.update(os.environ)
    return env


def _fail_json(args: argparse.Namespace, message: str, kind: str) -> None:
    """``ask --json`` answers with a JSON object on failure too."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "kind": kind,
                          "conversation": getattr(args, "conversation", None)},
                         ensure_ascii=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    secrets = _secrets()
    env = _env_and_dotenv()
    try:
        level, fmt = check_log(env)
        debug = check_debug(env)
    except ConfigError as err:
        print(f"chatbridge: {err.user_message}", file=sys.stderr)
        return USAGE
    if args.command in ("ask", "chat") and not env.get("CHATBRIDGE_LOG_LEVEL", "").strip():
        level = "ERROR"  # they print each failure (with its cause) on stderr themselves
    configure_logging(level, fmt, secrets)
    # SIGTERM unwinds like Ctrl-C (the bots install their own graceful handler): what we
    # started, such as the local model's server, is stopped rather than left running.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # the shell's prompt starts on a line of its own
        return INTERRUPTED
    except ChatbridgeError as err:
        message = redact(err.user_message, *secrets)
        _fail_json(args, message, err.kind)
        print(f"chatbridge: {message}", file=sys.stderr)
        return USAGE if isinstance(err, ConfigError | InputError) else FAILED
    except Exception as err:
        if debug:
            raise
        message = f"internal error: {type(err).__name__}: {redact(str(err), *secrets)}"
        _fail_json(args, message, "internal")
        print(f"chatbridge: {message} (CHATBRIDGE_DEBUG=1 shows a traceback)", file=sys.stderr)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
