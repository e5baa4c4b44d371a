"""hookbus: the event bus that backup tools report to.

This package is the top: the configuration file (config.py), the application
assembled from the layers below (app.py) and the command line (cli.py). The
layers live in the top-level folders `bus/`, `adapters/` and `subscribers/`,
installed as `hookbus.bus`, `hookbus.adapters` and `hookbus.subscribers`.
"""

__version__ = "0.1.0"
