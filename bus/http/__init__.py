"""bus.http."""
