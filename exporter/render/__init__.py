"""`cockpit-exporter render ...`: configuration for the tools around the exporter."""
