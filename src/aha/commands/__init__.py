"""One module per `aha` subcommand.

Each module defines `HELP` (one line for `aha --help`), `add_arguments(parser)` and
`run(args) -> int`. Modules import heavy libraries (torch, transformers) inside `run`, so that
`aha --help` stays fast. The CLI only parses arguments and calls in; the work lives in the library.
"""
