"""The terminal adapter: ``chatbridge chat`` and ``chatbridge ask``."""

from bots.console.ask import run_ask
from bots.console.chat import run_chat

__all__ = ["run_ask", "run_chat"]
