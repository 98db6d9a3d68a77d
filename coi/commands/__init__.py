"""One module per command group; each function takes the parsed args, returns an exit code."""
