"""Pendant entry point: pick the board and run the app (the flash holds this file as source)."""

import sys

# Keep 5 KB aside while the firmware loads and builds its objects: loading leaves small holes among
# what it keeps, and the tasks need room in one piece (a coroutine's frame takes a few hundred bytes).
reserve = [bytearray(5120)]

if sys.platform == "linux":
    from pendant.boards import sim as board
else:
    from pendant.boards import t_a7670e as board

from pendant import app

app.main(board, reserve)
