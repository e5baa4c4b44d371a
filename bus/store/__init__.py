"""The store: the journal (events with their sequence numbers, cursors, retry
state, dead letters, leases, the tools' open jobs) behind one interface.
Imports events and the foundation.
"""
