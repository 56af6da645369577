"""`python -m hub` runs the `surveyhub` command line."""

from hub.cli import main

main()
