"""Logs, metrics and health: how an operator sees what syncd is doing."""
