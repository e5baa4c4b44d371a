"""Adapters: inbound translation of each tool's payloads, and the shared outbound HTTP client."""
