"""The `bertfit` command: one module per command group; each handler parses, calls one API function, prints."""
