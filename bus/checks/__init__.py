"""Expectations (DESIGN §10): what each check expects of its job and when.

This package owns the checks' schedules (`schedule.py`: the next time a run is
due, a schedule in words) and, as it grows, their states and the events a
change of state publishes. It may import the foundation (`hookbus.bus`:
settings, where `Check` and its validation live), `hookbus.bus.events` and
`hookbus.bus.store`; it sits beside `hookbus.bus.notify` and imports neither it
nor anything above (tests/test_layers.py).
"""
