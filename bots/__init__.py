"""Platform adapters (Slack, Telegram, console) and the command line."""
