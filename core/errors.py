"""The one exception tree of chatbridge's core.

Every error the core raises is a ``ChatbridgeError``. Errors from other libraries
(httpx, SQLAlchemy, Pillow) are translated at the boundary with ``raise ... from err``.
Each carries ``user_message``: a sentence fit to show the person who wrote, with no
secret and no stack trace in it.

    ChatbridgeError
    ├── ConfigError              bad settings or profile; reported at start-up
    ├── InputError               the person's message cannot be used as it is
    │   └── ImageError           not an image, corrupt, too small, too large, odd ratio
    ├── StoreError               the database failed
    └── ModelError               the model endpoint did not give an answer
        ├── ModelAuthError       401/403: key wrong, missing, or no access
        ├── ModelBadRequest      400 other than moderation: the request was refused
        ├── ModelRefused         content moderation (data_inspection_failed), before or mid-stream
        ├── ModelProtocolError   the answer does not follow the API's format (a number as text…)
        ├── ModelStreamBroken    the stream ended without a finish reason or dropped
        └── ModelRetryable       worth another try after ``retry_after`` seconds (or backoff)
            ├── ModelRateLimited 429
            └── ModelUnavailable 5xx, timeouts, connection failures
                └── LocalResourcesExhausted  this process ran out of descriptors, buffers
                                             or pool slots before a byte left: not the
                                             model's fault (no circuit breaker, no fallback)
"""

from __future__ import annotations

__all__ = [
    "ChatbridgeError",
    "ConfigError",
    "ImageError",
    "InputError",
    "LocalResourcesExhausted",
    "ModelAuthError",
    "ModelBadRequest",
    "ModelError",
    "ModelProtocolError",
    "ModelRateLimited",
    "ModelRefused",
    "ModelRetryable",
    "ModelStreamBroken",
    "ModelUnavailable",
    "StoreError",
]


class ChatbridgeError(Exception):
    """Base of every error chatbridge's core raises."""

    kind = "error"
    default_user_message = "Something went wrong; please try again."
    # Whether the technical message may be shown as it is (config and input errors).
    message_is_for_people = True

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or self.default_user_message)
        shown = message if self.message_is_for_people else ""
        self.user_message = user_message or shown or self.default_user_message


class ConfigError(ChatbridgeError):
    """A setting or profile is wrong; raised before the first message is handled."""

    kind = "config"


class InputError(ChatbridgeError):
    """The person's message cannot be used as it is."""

    kind = "bad_input"
    default_user_message = "I couldn't read that message."


class ImageError(InputError):
    """An attached image is not usable."""

    kind = "bad_image"
    default_user_message = "I couldn't read that image."


class StoreError(ChatbridgeError):
    """The database failed."""

    kind = "store"
    message_is_for_people = False
    default_user_message = "I couldn't reach my memory (the database); please try again."


class LeaseLost(StoreError):
    """This replica no longer holds the conversation it was answering: another replica
    took it over (this one was too slow to renew its lease) and answers instead."""

    kind = "lease_lost"


class ModelError(ChatbridgeError):
    """The model endpoint did not give an answer."""

    kind = "model"
    message_is_for_people = False
    default_user_message = "The model did not answer; please try again."

    def __init__(
        self,
        message: str = "",
        *,
        user_message: str | None = None,
        status_code: int | None = None,
        code: str = "",
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.status_code = status_code
        self.code = code
        # The URL that was called (no secret in it), set where the request was sent.
        self.endpoint = ""

    @property
    def detail(self) -> str:
        """What failed and where, for the operator (logs, stderr): never shown in a chat."""
        return f"{self.endpoint}: {self}" if self.endpoint else str(self)


class ModelAuthError(ModelError):
    """The model API key is wrong or missing, or the account has no access."""

    kind = "auth"
    default_user_message = (
        "The model API key or access is wrong: check CHATBRIDGE_MODEL_API_KEY "
        "(or DASHSCOPE_API_KEY) and the key's region."
    )


class ModelBadRequest(ModelError):
    """The endpoint refused the request as malformed or unsupported."""

    kind = "bad_request"
    default_user_message = "The model refused the request."


class ModelRefused(ModelError):
    """Content moderation blocked the input or the output."""

    kind = "refused"
    default_user_message = "Sorry, I can't help with that request."


class ModelProtocolError(ModelError):
    """The endpoint answered, but not in the API's format (wrong types, missing fields):
    a server or proxy that does not speak the dialect chatbridge was told to use."""

    kind = "protocol"
    default_user_message = (
        "The model service sent an answer I couldn't read; please try again later."
    )


class ModelStreamBroken(ModelError):
    """The answer stream stopped early; ``partial`` holds what arrived."""

    kind = "partial"
    default_user_message = "The answer was cut off before it was finished."

    def __init__(self, message: str = "", *, partial: str = "", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.partial = partial


class ModelRetryable(ModelError):
    """A fault worth retrying; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ModelRateLimited(ModelRetryable):
    """429: too many requests or quota exceeded."""

    kind = "rate_limited"
    default_user_message = "The model is busy (rate limited); please try again in a minute."


class ModelUnavailable(ModelRetryable):
    """5xx, timeout or connection failure."""

    kind = "unavailable"
    default_user_message = "The model service is unavailable right now; please try again later."


class LocalResourcesExhausted(ModelUnavailable):
    """The request never left this process: no file descriptor, buffer or pool slot.

    Worth retrying (turns end and free them), but it says nothing about the model, so it
    neither opens the model's circuit breaker nor moves on to a fallback model.
    """

    kind = "local_resources"
    default_user_message = (
        "I'm overloaded right now and couldn't reach the model; please try again in a moment."
    )
