"""Database access: engine and sessions, models, repositories, migrations."""
