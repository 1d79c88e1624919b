"""Control: the configuration, the live parameter store, presets, and OSC in and out.

Writers (OSC server thread, window keys, presets) only validate, clamp and store; readers take
one consistent snapshot per frame.
"""
