"""Loopback fake of the Telegram Bot API, speaking the real wire format over real HTTP.

``/bot<token>/<method>`` (POST form, JSON or multipart, as PTB sends; method names are
case-insensitive) and ``GET /file/bot<token>/<path>``. It records every call, keeps the
messages it was sent, long-polls ``getUpdates`` honouring ``offset``, and enforces what
the real server enforces: HTML entities parsed as Telegram does ("Bad Request: can't
parse entities: …"), the 4096 limit on the visible text after parsing, "message is not
modified" (an edit that changes only the inline keyboard is a change), ``callback_data``
of 1 to 64 bytes, a callback query answered once (``press_button`` sends one). Failures
on demand: ``fail(method, 429, retry_after=1)`` (optionally only for
calls matching ``when``), ``stall(method, seconds)`` (the call takes effect, the answer
comes late: the client times out), ``blocked`` chats (403). Reference:
/work/shared/reference/protocols.md section D.

Tests: ``async with FakeBotApi(TOKEN) as api: api.push(update)``. Script (a manual run):
``python -m tests.bots.telegram.fake_bot_api --port 8081``; then ``POST /_fake/updates``
with an update's JSON and ``GET /_fake/calls`` to see what the bot sent.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "Bridge", "username": "bridge_bot",
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False}
MAX_TEXT = 4096
MAX_DOWNLOAD = 20_000_000
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message")
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
         "a", "tg-emoji", "code", "pre", "blockquote", "tg-time"}
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class EntityError(ValueError):
    """The text is not valid Telegram HTML; the message is the server's."""


def parse_html(text: str) -> str:
    """The visible text of Telegram HTML, validated as the Bot API does."""
    out: list[str] = []
    stack: list[str] = []
    i = 0

    def offset(pos: int) -> int:
        return len(text[:pos].encode())

    while i < len(text):
        ch = text[i]
        if ch == "<":
            end = text.find(">", i)
            if end < 0:
                raise EntityError(f"Unexpected end of name token at byte offset {offset(i)}")
            inner = text[i + 1 : end]
            closing = inner.startswith("/")
            match = re.match(r"[a-z][a-z0-9-]*", inner[1:] if closing else inner)
            if not match:
                raise EntityError(f"Unexpected end of name token at byte offset {offset(i)}")
            name = match.group(0)
            if name not in _TAGS:
                kind = "end" if closing else "start"
                raise EntityError(f'Unsupported {kind} tag "{name}" at byte offset {offset(i)}')
            if closing:
                if not stack or stack[-1] != name:
                    expected = f"</{stack[-1]}>" if stack else "nothing"
                    raise EntityError(f"Unmatched end tag at byte offset {offset(i)}, "
                                      f'expected "{expected}", found "</{name}>"')
                stack.pop()
            else:
                if stack and stack[-1] in ("code", "pre") and not (
                        stack[-1] == "pre" and name == "code"):
                    raise EntityError(f"Entities can't be nested in {stack[-1]} at byte "
                                      f"offset {offset(i)}")
                if name == "blockquote" and "blockquote" in stack:
                    raise EntityError("Blockquote entities can't be nested")
                if name == "a" and "href=" not in inner:
                    raise EntityError(f"Can't find href of the link at byte offset {offset(i)}")
                stack.append(name)
            i = end + 1
        elif ch == "&":
            match = re.match(r"&(#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);", text[i:])
            if not match:
                raise EntityError(f"Unsupported HTML entity at byte offset {offset(i)}")
            body = match.group(1)
            if body.startswith("#"):
                out.append(html.unescape(match.group(0)))
            elif body in _NAMED:
                out.append(_NAMED[body])
            else:
                raise EntityError(f'Unsupported HTML entity "{body}" at byte offset {offset(i)}')
            i += len(match.group(0))
        elif ch == ">":
            raise EntityError(f"Unexpected end tag at byte offset {offset(i)}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


class ApiError(Exception):
    """A Bot API error answer."""

    def __init__(self, code: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Call:
    """One recorded Bot API call."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    def get(self, name: str, default: Any = None) -> Any:
        """A parameter, JSON-decoded when PTB form-encoded it."""
        value = self.params.get(name, default)
        if isinstance(value, str) and name not in ("text", "caption", "url", "secret_token",
                                                   "business_connection_id", "file_id"):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


@dataclass
class Sent:
    """A message the bot has in a chat."""

    chat_id: int
    message_id: int
    html: str | None
    text: str
    thread_id: int | None = None
    business_connection_id: str | None = None
    reply_to: int | None = None
    deleted: bool = False
    rich: dict[str, Any] | None = None  # a rich message's InputRichMessage
    reply_markup: dict[str, Any] | None = None  # its inline keyboard, if any


class FakeBotApi:
    """The fake server; start with ``async with`` (it runs on the caller's event loop)."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.host, self.port = host, port
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], Sent] = {}
        self.answered_queries: list[str] = []  # answerCallbackQuery ids, in order
        self.files: dict[str, tuple[bytes, int]] = {}  # file_id -> (data, reported size)
        self.blocked: set[int] = set()
        # getBusinessConnection answers (BusinessConnection objects by id)
        self.business_connections: dict[str, dict[str, Any]] = {}
        self.webhook: dict[str, Any] = {}
        self.downloads: list[str] = []
        self.reject_html = 0  # answer the next N HTML texts with a parse error
        # Bot API 10.1 rich messages; False: an older server (the methods are unknown)
        self.rich = True
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._update_ids = itertools.count(500_000)
        self._message_ids: dict[int, itertools.count[int]] = defaultdict(
            lambda: itertools.count(9000))
        self._failures: dict[str, list[tuple[ApiError, Callable[[Call], bool] | None]]] = \
            defaultdict(list)
        self._stalls: dict[str, list[float]] = defaultdict(list)
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def api_url(self) -> str:
        """Value for CHATBRIDGE_TELEGRAM_API_URL."""
        return f"http://{self.host}:{self.port}/bot"

    @property
    def file_url(self) -> str:
        """Value for CHATBRIDGE_TELEGRAM_FILE_URL."""
        return f"http://{self.host}:{self.port}/file/bot"

    async def start(self) -> FakeBotApi:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        app.router.add_post("/_fake/updates", self._push_http)
        app.router.add_get("/_fake/calls", self._calls_http)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeBotApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- test controls
    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an ``update_id`` is added when missing)."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._new_update.set()
        return update

    def press_stop(self, chat_id: int, draft_id: int) -> dict[str, Any]:
        """The person presses a draft's stop button (Bot API 10.3): the update Telegram
        sends, ``MessageGenerationStopped`` [protocols-2 L.3; core.telegram.org/bots/api/
        types/messagegenerationstopped]."""
        chat = {"id": chat_id, "type": "private", "first_name": "Alice"}
        return self.push({"stopped_message_generation": {"chat": chat,
                                                         "draft_id": draft_id}})

    def press_button(self, chat_id: int, message_id: int, user: dict[str, Any],
                     data: str | None = None) -> dict[str, Any]:
        """``user`` presses an inline button of the bot's message: a ``callback_query``
        update (``CallbackQuery``: id, from, message, chat_instance, data; Bot API).
        ``data``: the button's ``callback_data`` (default: the message's first button)."""
        sent = self.messages[(chat_id, message_id)]
        if data is None:
            assert sent.reply_markup, "the message has no buttons"
            data = sent.reply_markup["inline_keyboard"][0][0]["callback_data"]
        query_id = f"q{next(self._update_ids)}-{message_id}"
        return self.push({"callback_query": {
            "id": query_id, "from": user, "chat_instance": f"ci{chat_id}",
            "message": self._message(sent), "data": data}})

    def react(self, chat_id: int, message_id: int, user: dict[str, Any], new: list[str],
              old: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """A ``message_reaction`` update (``MessageReactionUpdated``, Bot API 7.0)."""
        emoji = [{"type": "emoji", "emoji": e} for e in new]
        before = [{"type": "emoji", "emoji": e} for e in old or []]
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        return self.push({"message_reaction": {
            "chat": chat, "message_id": message_id, "user": user,
            "date": extra.pop("date", int(time.time())), "old_reaction": before,
            "new_reaction": emoji}, **extra})

    def press(self, chat_id: int, message_id: int, data: str, user: dict[str, Any], *,
              query_id: str | None = None) -> dict[str, Any]:
        """Someone presses an inline button of the bot's message: a ``callback_query``
        update (``CallbackQuery``: id, from, message, chat_instance, data)."""
        sent = self.messages[(chat_id, message_id)]
        return self.push({"callback_query": {
            "id": query_id or f"cq{next(self._update_ids)}", "from": user,
            "message": self._message(sent), "chat_instance": f"ci{chat_id}", "data": data}})

    def fail(self, method: str, code: int, description: str = "", *, times: int = 1,
             retry_after: int | None = None,
             when: Callable[[Call], bool] | None = None) -> None:
        """Answer the next ``times`` calls of ``method`` (that match ``when``) with an error."""
        if not description:
            description = {429: f"Too Many Requests: retry after {retry_after}",
                           403: "Forbidden: bot was blocked by the user"}.get(
                code, "Bad Request: something")
        params = {"retry_after": retry_after} if retry_after is not None else {}
        for _ in range(times):
            self._failures[method.lower()].append((ApiError(code, description, **params), when))

    def stall(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Carry out the next ``times`` calls of ``method`` but answer only after ``seconds``."""
        self._stalls[method.lower()].extend([seconds] * times)

    def add_file(self, file_id: str, data: bytes, *, size: int | None = None) -> None:
        """Make a file available to getFile (``size``: what the server reports)."""
        self.files[file_id] = (data, len(data) if size is None else size)

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of one method."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def texts(self, chat_id: int) -> list[str]:
        """Visible texts of the bot's messages in a chat, oldest first."""
        return [m.text for (c, _), m in sorted(self.messages.items())
                if c == chat_id and not m.deleted]

    def sent(self, chat_id: int) -> list[Sent]:
        """The bot's messages in a chat, oldest first."""
        return [m for (c, _), m in sorted(self.messages.items())
                if c == chat_id and not m.deleted]

    async def wait_for(self, check: Any, within: float = 15.0) -> Any:
        """Poll ``check()`` until it returns something truthy."""
        deadline = time.monotonic() + within
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; calls: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.02)

    # ---------------------------------------------------------------- HTTP plumbing
    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.read()
            if body:
                params.update(json.loads(body))
        elif ctype == "application/x-www-form-urlencoded":
            params.update(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        elif ctype.startswith("multipart/"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params

    @staticmethod
    def _answer(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(err: ApiError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": err.code,
                                "description": err.description}
        if err.parameters:
            body["parameters"] = err.parameters
        return web.json_response(body, status=err.code)

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(ApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        call = Call(method, await self._params(request))
        self.calls.append(call)
        failures = self._failures.get(method.lower(), [])
        for index, (error, when) in enumerate(failures):
            if when is None or when(call):
                del failures[index]
                return self._error(error)
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return self._error(ApiError(404, "Not Found: method not found"))
        try:
            result = await handler(call)
        except ApiError as err:
            return self._error(err)
        stalls = self._stalls.get(method.lower())
        if stalls:
            await asyncio.sleep(stalls.pop(0))
        return self._answer(result)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=404)
        path = request.match_info["path"]
        self.downloads.append(path)
        for file_id, (data, _) in self.files.items():
            if path == self._file_path(file_id):
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    async def _push_http(self, request: web.Request) -> web.Response:
        return web.json_response(self.push(json.loads(await request.read())))

    async def _calls_http(self, request: web.Request) -> web.Response:
        return web.json_response([{"method": c.method, "params": c.params}
                                  for c in self.calls])

    # ---------------------------------------------------------------- checks shared by methods
    def _chat(self, call: Call) -> int:
        chat_id = call.get("chat_id")
        if not isinstance(chat_id, int):
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _visible(self, call: Call, *, allow_empty: bool = False) -> tuple[str | None, str]:
        text = call.get("text")
        if text is None:
            text = ""
        mode = call.get("parse_mode")
        source: str | None = None
        if mode is not None and str(mode).lower() == "html":
            source = text
            if self.reject_html > 0:
                self.reject_html -= 1
                raise ApiError(400, "Bad Request: can't parse entities: Unsupported start "
                                    'tag "x" at byte offset 0')
            try:
                text = parse_html(text)
            except EntityError as err:
                raise ApiError(400, f"Bad Request: can't parse entities: {err}") from err
        elif mode is not None:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {mode}")
        if not text.strip() and not allow_empty:
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return source, text

    def _message(self, sent: Sent) -> dict[str, Any]:
        chat_type = "private" if sent.chat_id > 0 else "supergroup"
        message: dict[str, Any] = {
            "message_id": sent.message_id, "date": int(time.time()), "from": BOT_USER,
            "chat": {"id": sent.chat_id, "type": chat_type}, "text": sent.text,
        }
        if sent.thread_id is not None:
            message["message_thread_id"] = sent.thread_id
            message["is_topic_message"] = True
        if sent.business_connection_id is not None:
            message["business_connection_id"] = sent.business_connection_id
        if sent.reply_markup:
            message["reply_markup"] = sent.reply_markup
        return message

    def _markup(self, call: Call) -> dict[str, Any] | None:
        """An inline keyboard parameter, checked as Telegram checks ``callback_data``
        (1 to 64 bytes)."""
        markup = call.get("reply_markup")
        if not markup:
            return None
        if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        for row in markup["inline_keyboard"]:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    @staticmethod
    def _file_path(file_id: str) -> str:
        return f"photos/{file_id}.jpg"

    # ---------------------------------------------------------------- methods
    async def _m_getme(self, call: Call) -> Any:
        return BOT_USER

    async def _m_deletewebhook(self, call: Call) -> Any:
        self.webhook = {}
        return True

    async def _m_setwebhook(self, call: Call) -> Any:
        url = call.get("url")
        secret = call.get("secret_token")
        if not url:
            raise ApiError(400, "Bad Request: bad webhook: URL must be provided")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: bad webhook: secret token contains "
                                "unallowed characters")
        self.webhook = {"url": url, "secret_token": secret,
                        "allowed_updates": call.get("allowed_updates")}
        return True

    async def _m_setmycommands(self, call: Call) -> Any:
        commands = call.get("commands")
        if not isinstance(commands, list) or not all(
                re.fullmatch(r"[a-z0-9_]{1,32}", c.get("command", "")) for c in commands):
            raise ApiError(400, "Bad Request: invalid command")
        return True

    async def _m_getupdates(self, call: Call) -> Any:
        offset = int(call.get("offset") or 0)
        timeout = float(call.get("timeout") or 0)
        limit = int(call.get("limit") or 100)
        if self.webhook:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                "active; use deleteWebhook to delete the webhook first")
        deadline = time.monotonic() + timeout
        while True:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if self._updates or time.monotonic() >= deadline:
                return self._updates[:limit]
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(),
                                       max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                pass

    async def _m_sendmessage(self, call: Call) -> Any:
        chat_id = self._chat(call)
        source, text = self._visible(call)
        reply = call.get("reply_parameters")
        thread = call.get("message_thread_id")
        sent = Sent(chat_id, next(self._message_ids[chat_id]), source, text,
                    thread_id=thread if isinstance(thread, int) else None,
                    business_connection_id=call.get("business_connection_id"),
                    reply_to=reply.get("message_id") if isinstance(reply, dict) else None,
                    reply_markup=self._markup(call))
        self.messages[(chat_id, sent.message_id)] = sent
        return self._message(sent)

    async def _m_getbusinessconnection(self, call: Call) -> Any:
        found = self.business_connections.get(str(call.get("business_connection_id")))
        if found is None:
            raise ApiError(400, "Bad Request: business connection not found")
        return found

    async def _m_answercallbackquery(self, call: Call) -> Any:
        # A query is answered once; a second answer is refused as Telegram refuses it.
        query_id = str(call.get("callback_query_id") or "")
        if not query_id or query_id in self.answered_queries:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired "
                                "or query ID is invalid")
        self.answered_queries.append(query_id)
        return True

    # Rich messages (Bot API 10.1; 10.3 can_stop/keep_on_stop on drafts), checked as
    # protocols-2 L.2 states [telegram-bot-api-spec api.json; aiogram schema]: exactly one
    # of html/markdown/blocks; known block types; ≤500 blocks, ≤20 table columns, 32,768
    # characters; "thinking" only in drafts. A server without them answers 404 (as the
    # unknown methods of any Bot API server).
    def _rich(self, call: Call, *, draft: bool) -> tuple[dict[str, Any], str]:
        if not self.rich:
            raise ApiError(404, "Not Found: method not found")
        rich = call.get("rich_message")
        if not isinstance(rich, dict) or sum(k in rich for k in
                                             ("html", "markdown", "blocks")) != 1:
            raise ApiError(400, "Bad Request: exactly one of html, markdown or blocks must "
                                "be specified")
        blocks = rich.get("blocks")
        if blocks is None:
            return rich, str(rich.get("html") or rich.get("markdown"))
        counted = [0]
        visible = "\n".join(self._block_text(b, draft, counted, 1) for b in blocks)
        if counted[0] > 500:
            raise ApiError(400, "Bad Request: too many blocks")
        if len(visible) > 32_768:
            raise ApiError(400, "Bad Request: rich message is too long")
        return rich, visible

    @staticmethod
    def _rich_text(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "".join(FakeBotApi._rich_text(v) for v in value)
        if isinstance(value, dict) and value.get("type") == "url" \
                and not str(value.get("url") or "").startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: url rich text must have a URL")
        if isinstance(value, dict) and "text" in value:
            return FakeBotApi._rich_text(value["text"])
        raise ApiError(400, "Bad Request: can't parse rich text")

    def _block_text(self, block: Any, draft: bool, counted: list[int], depth: int) -> str:
        if not isinstance(block, dict) or depth > 16:
            raise ApiError(400, "Bad Request: invalid block")
        counted[0] += 1
        kind = block.get("type")
        if kind in ("paragraph", "heading", "pre", "footer"):
            if kind == "heading" and block.get("size", 1) not in range(1, 7):
                raise ApiError(400, "Bad Request: invalid heading size")
            return self._rich_text(block.get("text"))
        if kind == "thinking":
            if not draft:
                raise ApiError(400, "Bad Request: thinking blocks are allowed only in drafts")
            return self._rich_text(block.get("text"))
        if kind == "divider":
            return "—"
        if kind == "list":
            items = block.get("items")
            if not isinstance(items, list) or not items:
                raise ApiError(400, "Bad Request: list must have items")
            counted[0] += len(items)
            return "\n".join("• " + "\n".join(self._block_text(b, draft, counted, depth + 1)
                                                for b in item.get("blocks", []))
                             for item in items)
        if kind == "table":
            cells = block.get("cells")
            if not isinstance(cells, list) or not cells or not all(
                    isinstance(r, list) and r for r in cells):
                raise ApiError(400, "Bad Request: table must have cells")
            if any(len(r) > 20 for r in cells):
                raise ApiError(400, "Bad Request: too many table columns")
            counted[0] += len(cells)
            return "\n".join(" | ".join(self._rich_text(c.get("text", "")) for c in r)
                             for r in cells)
        if kind == "details":
            inner = [self._block_text(b, draft, counted, depth + 1)
                     for b in block.get("blocks", [])]
            return "\n".join([self._rich_text(block.get("summary", "")), *inner])
        raise ApiError(400, f"Bad Request: unknown block type {kind}")

    async def _m_sendrichmessage(self, call: Call) -> Any:
        chat_id = self._chat(call)
        rich, visible = self._rich(call, draft=False)
        thread = call.get("message_thread_id")
        reply = call.get("reply_parameters")
        sent = Sent(chat_id, next(self._message_ids[chat_id]), None, visible,
                    thread_id=thread if isinstance(thread, int) else None,
                    business_connection_id=call.get("business_connection_id"),
                    reply_to=reply.get("message_id") if isinstance(reply, dict) else None,
                    rich=rich)
        self.messages[(chat_id, sent.message_id)] = sent
        return self._message(sent)

    def _draft_checks(self, call: Call) -> None:
        """What Telegram refuses of any draft: a group chat, a zero draft id."""
        if self._chat(call) < 0:
            raise ApiError(400, "Bad Request: method is available only for private chats")
        if not call.get("draft_id"):
            raise ApiError(400, "Bad Request: draft_id must be non-zero")

    async def _m_sendrichmessagedraft(self, call: Call) -> Any:
        self._draft_checks(call)
        self._rich(call, draft=True)
        return True

    async def _m_sendmessagedraft(self, call: Call) -> Any:
        self._draft_checks(call)
        self._visible(call, allow_empty=True)
        return True

    async def _m_editmessagetext(self, call: Call) -> Any:
        chat_id = self._chat(call)
        sent = self.messages.get((chat_id, call.get("message_id")))
        if sent is None or sent.deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        source, text = self._visible(call)
        markup = self._markup(call)  # an edit without one removes the buttons
        if source == sent.html and text == sent.text and markup == sent.reply_markup:
            raise ApiError(400, NOT_MODIFIED)
        sent.html, sent.text, sent.reply_markup = source, text, markup
        return self._message(sent)

    async def _m_deletemessage(self, call: Call) -> Any:
        chat_id = self._chat(call)
        sent = self.messages.get((chat_id, call.get("message_id")))
        if sent is None or sent.deleted:
            raise ApiError(400, "Bad Request: message to delete not found")
        sent.deleted = True
        return True

    async def _m_sendchataction(self, call: Call) -> Any:
        self._chat(call)
        if call.get("action") not in ("typing", "upload_photo", "upload_document"):
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _m_getfile(self, call: Call) -> Any:
        file_id = str(call.get("file_id"))
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        _, size = self.files[file_id]
        if size > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size,
                "file_path": self._file_path(file_id)}


async def _serve(port: int, token: str) -> None:
    async with FakeBotApi(token, port=port) as api:
        print(f"fake Bot API on {api.api_url} (file base {api.file_url})", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Telegram Bot API server.")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.token))


if __name__ == "__main__":
    main()
