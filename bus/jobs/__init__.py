"""bus.jobs."""
