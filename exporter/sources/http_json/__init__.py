"""The http_json source: any JSON API mapped to metrics by configuration."""
