"""Sub-commands of the ``policyagent`` command line, one module each.

Each module defines ``register(subparsers)``, which adds its sub-parser and sets ``func`` to a
function taking the parsed arguments and returning the exit status.
"""
