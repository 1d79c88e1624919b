"""The live pipeline: sources, the capture thread, feedback, the dream loop thread and what
hangs off each frame (recorder, snapshots, watchdog, attract mode)."""
