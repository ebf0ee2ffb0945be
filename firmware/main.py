"""Pendant entry point: pick the board and run the app (the flash holds this file as source)."""

import sys

if sys.platform == "linux":
    from pendant.boards import sim as board
else:
    from pendant.boards import t_a7670e as board

from pendant import app

app.main(board)
