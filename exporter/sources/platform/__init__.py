"""The platform source: each tenant's agents, processes, schedules and runs from the HTTP API."""
