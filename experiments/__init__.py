"""Experiments that use the library end to end (each one entry point, configs under configs/)."""
