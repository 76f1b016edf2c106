"""Tools the model may call: the registry, the loop that runs them, the built-in ones."""

from core.tools.loop import AgentLoop, Journal, ToolSettings
from core.tools.registry import Registry, Tool, Toolbox, ToolContext, ToolOutput

__all__ = [
    "AgentLoop", "Journal", "Registry", "Tool", "ToolContext", "ToolOutput", "ToolSettings",
    "Toolbox",
]
