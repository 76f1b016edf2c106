"""Model clients: OpenAI-compatible and DashScope-native, plus retries."""

from core.model.base import ModelClient
from core.model.dashscope import DashScopeClient
from core.model.openai import OpenAIClient
from core.model.retry import RetryingClient, RetryPolicy

__all__ = ["DashScopeClient", "ModelClient", "OpenAIClient", "RetryPolicy", "RetryingClient"]
