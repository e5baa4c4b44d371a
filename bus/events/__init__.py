"""bus.events."""
