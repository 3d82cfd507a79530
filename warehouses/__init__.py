"""Stages and warehouses behind two small interfaces (see `warehouses.base`)."""
