"""bus.store."""
