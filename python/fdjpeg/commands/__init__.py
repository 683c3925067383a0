"""Subcommands of the ``fdjpeg`` command line, one module each, each with ``register(subparsers)``."""

# Modules listed here add their subcommand to ``fdjpeg``; keep one per line.
COMMAND_MODULES = (
    "fdjpeg.commands.demo",
    "fdjpeg.commands.bench",
    "fdjpeg.commands.defend",
    "fdjpeg.commands.train_classifier",
    "fdjpeg.commands.classifiers",
    "fdjpeg.commands.train_comdefend",
    "fdjpeg.commands.train_ensemble",
    "fdjpeg.commands.eval",
)
