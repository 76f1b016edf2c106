"""Model clients: Chat Completions, the Responses API and DashScope native, plus retries."""

from core.model.base import ModelClient
from core.model.dashscope import DashScopeClient
from core.model.openai import OpenAIClient
from core.model.resilience import CircuitBreaker, FallbackClient
from core.model.responses import ResponsesClient
from core.model.retry import RetryingClient, RetryPolicy

__all__ = [
    "CircuitBreaker",
    "DashScopeClient",
    "FallbackClient",
    "ModelClient",
    "OpenAIClient",
    "ResponsesClient",
    "RetryPolicy",
    "RetryingClient",
]
