"""The command line: the parser and main (cli.py), then one module or package per command
group; each handler takes the parsed args and returns an exit code."""
