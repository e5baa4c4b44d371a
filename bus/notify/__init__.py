"""bus.notify."""
