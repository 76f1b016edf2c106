"""chatbridge's platform-neutral core: memory in SQL, model clients, the chat service.

No platform SDK (slack_bolt, slack_sdk, telegram) is imported anywhere under ``core``.
"""
