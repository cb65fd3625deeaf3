"""`mi-run`: one module per subcommand (validate, plan, run, listing); `main` parses and dispatches."""
from .main import console, main

__all__ = ["console", "main"]
