"""Delivery: the subscriber contract (config model, DeliveryError, the context a
subscriber is given) and the runner that feeds one subscriber in order, with
retries, deadlines, dead letters and cursor commits. Imports transport, store,
events and the foundation.
"""
