"""bus.transport."""
