"""`python -m carina.platform` is the `carina` command."""

from carina.platform.cli.main import main

main()
