"""The bot's commands: /start, /help, /reset, /summary, /compact, /model.

The caller claims the command's answer first (``ChatService.first_time``), so a command
answered again (a retried claim) has no second effect; here a command only runs and
answers.
"""

from __future__ import annotations

from telegram import BotCommand

from bots.telegram.config import TelegramConfig
from bots.telegram.render import Replier
from core.errors import ChatbridgeError
from core.service import ChatService

__all__ = ["COMMANDS", "NAMES", "Commands"]

COMMANDS = (
    BotCommand("start", "Say hello"),
    BotCommand("help", "What I can read and do"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("summary", "Show the summary of our earlier conversation"),
    BotCommand("compact", "Fold our conversation so far into that summary"),
    BotCommand("model", "Show or switch the model"),
)
NAMES = frozenset(c.command for c in COMMANDS)
HELP = (
    "Write to me and I answer, remembering our conversation. I can read text and images "
    "(photos, albums, and images sent as files up to {mb} MB), and watch videos.\n\n"
    "In groups I answer when you mention me, reply to one of my messages, or use a command; "
    "each forum topic is its own conversation.\n\n"
    "/reset starts a new conversation (the old one is kept)\n"
    "/summary shows what I keep of our earlier conversation; /compact folds it all in now\n"
    "/model shows the model{switch}\n"
    "/help shows this"
)


class Commands:
    """Runs one of ``NAMES`` for a conversation key and answers through a ``Replier``."""

    def __init__(self, *, service: ChatService, config: TelegramConfig,
                 platform: str) -> None:
        self._service = service
        self._config = config
        self._platform = platform

    async def run(self, name: str, args: str, *, scope: str, profile: str | None,
                  replier: Replier) -> None:
        """Run the command ``name``; one not in ``NAMES``, or ``/reset`` with words after
        it, gets a one-line hint."""
        service = self._service
        if name not in NAMES:
            shown = name if len(name) <= 30 else name[:30] + "…"
            await replier.say(f"Unknown command /{shown}. I know "
                              f"{' '.join('/' + c.command for c in COMMANDS)}; "
                              "/help explains them.")
        elif name == "reset" and args:
            await replier.say("/reset takes nothing after it: send just /reset to start a "
                              "new conversation.")
        elif name in ("summary", "compact") and args:
            await replier.say(f"/{name} takes nothing after it: send just /{name}.")
        elif name == "summary":
            await replier.say(await service.summary(platform=self._platform, scope=scope))
        elif name == "compact":
            await replier.say(await service.compact(platform=self._platform, scope=scope,
                                                    profile=profile))
        elif name == "start":
            await replier.say(self._config.greeting_for(profile))
        elif name == "help":
            choices = service.model_choices
            switch = f"; /model NAME switches to one of: {', '.join(choices)}" if choices else ""
            await replier.say(HELP.format(mb=self._config.max_file_bytes // 1_000_000,
                                          switch=switch))
        elif name == "reset":
            await service.reset(platform=self._platform, scope=scope)
            await replier.say("Started a new conversation. (The earlier one is kept.)")
        else:
            await self._model(scope, profile, args, replier)

    async def _model(self, scope: str, profile: str | None, args: str,
                     replier: Replier) -> None:
        service = self._service
        platform = self._platform
        choices = service.model_choices
        if args and choices:
            wanted = args.split()[0]
            try:
                await service.choose_model(
                    platform=platform, scope=scope,
                    model=None if wanted.lower() == "default" else wanted)
            except ChatbridgeError as err:
                await replier.say(err.user_message)
                return
        current = await service.current_model(platform=platform, scope=scope, profile=profile)
        if not choices:
            await replier.say(f"Model: {current}. (Switching is not enabled here.)")
        elif args:
            await replier.say(f"Switched to {current} for this conversation.")
        else:
            await replier.say(f"Model: {current}. Switch with /model NAME, one of: "
                              f"{', '.join(choices)} (or /model default).")
