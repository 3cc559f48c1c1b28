"""The SQL source: tenant databases queried with SQLAlchemy's async engine."""
