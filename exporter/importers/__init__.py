"""`cockpit-exporter import`: peers' configs (query-exporter, sql_exporter) turned into ours."""
