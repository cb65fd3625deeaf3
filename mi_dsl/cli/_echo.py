"""Printing for the subcommands: plain lines on stdout, flushed (progress goes to stderr)."""


def echo(text: str = "") -> None:
    print(text, flush=True)
