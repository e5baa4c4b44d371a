"""hookbus: the event bus that backup tools report to.

The code lives in the top-level folders `bus/`, `subscribers/` and `adapters/`,
installed as `hookbus.bus`, `hookbus.subscribers` and `hookbus.adapters`.
"""

__version__ = "0.1.0"
