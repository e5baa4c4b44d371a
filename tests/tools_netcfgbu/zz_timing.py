"""Test helper dropped into netcfgbu's plugins directory after hookbus's plugin:
it times every call netcfgbu makes into the hookbus plugin, inside netcfgbu.
Not a Plugin subclass itself, so netcfgbu never calls it."""

import os
import sys
import time

plugin = sys.modules["netcfgbu_plugin"].Hookbus
OUT = os.environ["HOOKBUS_TEST_TIMINGS"]


def timed(name, fn):
    def call(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - start
            with open(OUT, "a") as f:
                f.write("%s %.6f\n" % (name, elapsed))

    return staticmethod(call)


for _name in ("backup_success", "backup_failed", "report", "git_report"):
    setattr(plugin, _name, timed(_name, getattr(plugin, _name)))
