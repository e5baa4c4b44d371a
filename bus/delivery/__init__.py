"""bus.delivery."""
