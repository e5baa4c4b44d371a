"""An Ansible callback plugin that writes a playbook's per-host counts and first
failures as JSON to the file named by $HOOKBUS_ANSIBLE_STATS.

The `ansible` subscriber puts this directory on ANSIBLE_CALLBACK_PLUGINS. It
runs inside ansible-playbook, not inside hookbus, and leaves the normal screen
output alone; without $HOOKBUS_ANSIBLE_STATS it does nothing.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: hookbus_stats
type: aggregate
short_description: per-host counts and first failures as JSON, for hookbus
description:
  - Writes the play recap counts of every host and the first failed or
    unreachable tasks to the file named by the HOOKBUS_ANSIBLE_STATS
    environment variable.
"""

MAX_FAILURES = 50
MAX_MESSAGE = 500


def _message(result: dict) -> str:
    msg = str(result.get("msg") or "").strip()
    stderr = str(result.get("stderr") or "").strip()
    if stderr and (not msg or msg == "non-zero return code"):
        msg = stderr.splitlines()[-1]
    if not msg and result.get("rc") is not None:
        msg = "exit status %s" % result.get("rc")
    return msg[:MAX_MESSAGE]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hookbus_stats"
    # Loaded whenever it is on the callback path: enabling it through
    # ANSIBLE_CALLBACKS_ENABLED would replace the user's own list.
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("HOOKBUS_ANSIBLE_STATS")
        self.failures = []
        self.itemised = set()  # (host, task) whose items were reported one by one

    def _add(self, result, message, **extra):
        if len(self.failures) < MAX_FAILURES:
            self.failures.append({"host": result._host.get_name(), "task": result._task.get_name(),
                                  "message": message, **extra})

    def v2_runner_item_on_failed(self, result):
        res = result._result
        label = res.get("_ansible_item_label", res.get("item"))
        self.itemised.add((result._host.get_name(), result._task.get_name()))
        self._add(result, _message(res), item=str(label)[:200])

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors or (result._host.get_name(), result._task.get_name()) in self.itemised:
            return
        self._add(result, _message(result._result))

    def v2_runner_on_unreachable(self, result):
        self._add(result, _message(result._result), unreachable=True)

    def v2_playbook_on_stats(self, stats):
        if not self.path:
            return
        hosts = {}
        for host in sorted(stats.processed):
            s = stats.summarize(host)
            hosts[host] = {"ok": s.get("ok", 0), "changed": s.get("changed", 0), "failed": s.get("failures", 0),
                           "unreachable": s.get("unreachable", 0), "skipped": s.get("skipped", 0),
                           "rescued": s.get("rescued", 0), "ignored": s.get("ignored", 0)}
        with open(self.path, "w") as f:
            json.dump({"hosts": hosts, "failures": self.failures}, f, default=str)
