"""Pforte's gateway: the websocket relay of the display stream. Never imports the broker."""
