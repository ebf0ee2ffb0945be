"""The bench: A7670 modem simulator and virtual pendants running the real firmware."""
