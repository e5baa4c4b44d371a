"""Adapters: each tool's payloads translated into canonical events, one module per
tool (found by scanning, registry.py), the healthchecks-compatible ping API,
and the one outbound HTTP client. Imports any layer of `hookbus.bus`.
"""
