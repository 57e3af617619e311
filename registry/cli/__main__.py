"""`python -m registry.cli` is `wmnode`."""

from registry.cli import main

main()
