"""What went wrong in a Web API call, in a few words safe to log (no URL, no token)."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

__all__ = ["error_kind"]


def error_kind(err: BaseException) -> str:
    """Slack's error code (``invalid_auth``), else the HTTP status, else the error's type.

    A proxy's error page is not JSON: its body is never read as one.
    """
    if isinstance(err, SlackApiError):
        data = getattr(err.response, "data", None)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
        status = getattr(err.response, "status_code", None)
        if isinstance(status, int):
            return f"HTTP {status}"
    return type(err).__name__
