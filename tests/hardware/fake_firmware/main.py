# A stand-in for firmware/main.py in the bench tests (runs on the MicroPython unix port).
import pendant.app

pendant.app.run()
