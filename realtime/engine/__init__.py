"""The dream engine: networks, objectives and the dream step with its strategies.

Torch only, no threads, and it never imports the rest of the package: whichever thread
calls it owns the call (the dream thread in a live run, the main thread offline).
"""
