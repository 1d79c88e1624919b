"""Real-time deep dream: the engine, sources, feedback, display and control for the installation."""

__version__ = "0.1.0"
