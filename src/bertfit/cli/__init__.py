"""The `bertfit` command: one module per command group; each handler parses, calls one API function, prints."""

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130  # a BertfitError; Ctrl-C (or a run stopped by it)
