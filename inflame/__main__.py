"""`python -m inflame` runs the CLI."""

from inflame.cli import main

main()
