"""Presentation: the pyglet window, its GL shaders and the HUD; main thread only."""
