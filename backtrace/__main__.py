"""`python -m backtrace` runs the command line."""
from .cli import main

main()
