"""Accounts: password hashing, API keys, access tokens and the SQL for users and keys."""
