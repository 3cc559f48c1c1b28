"""A simulator of the platform API with fault injection (`cockpit-exporter simulate`)."""
