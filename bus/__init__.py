"""The bus: event model, journal, broker, clients, HTTP endpoint, command line."""
