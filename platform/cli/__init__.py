"""The `carina` command line (`cli.main:main`): a Typer app and the modules that register on it."""
