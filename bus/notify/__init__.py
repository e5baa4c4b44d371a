"""Notification support shared by the notifying kinds: the notifier base, the
default message texts, sandboxed templates, digests, and shell-safe values.
Imports delivery and the layers below it.
"""
