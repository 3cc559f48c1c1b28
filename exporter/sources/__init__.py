"""Sources of metrics: each kind is one package here plus one line in registry.py."""
