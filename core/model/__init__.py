"""Model clients: OpenAI-compatible and DashScope-native, plus retries."""

from core.model.base import ModelClient
from core.model.dashscope import DashScopeClient
from core.model.openai import OpenAIClient
from core.model.resilience import CircuitBreaker, FallbackClient
from core.model.retry import RetryingClient, RetryPolicy

__all__ = [
    "CircuitBreaker",
    "DashScopeClient",
    "FallbackClient",
    "ModelClient",
    "OpenAIClient",
    "RetryPolicy",
    "RetryingClient",
]
