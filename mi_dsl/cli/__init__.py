"""`mi-run`: one module per subcommand (validate, plan, run, listing); `main` parses and dispatches."""
from .main import main

__all__ = ["main"]
