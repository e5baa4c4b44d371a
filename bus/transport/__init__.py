"""Transport: the ZeroMQ broker (acks after commit, fan-out on XPUB), its wire
protocol and control commands, the clients, CURVE keys and ZAP, and the
spool a client keeps while the broker is away. Imports store, events and the
foundation.
"""
