"""Command-line front ends, one module per command group.

Each module exposes ``register(subparsers)``, which adds its sub-commands to the ``capscale``
parser. Handlers only parse arguments and call the Python API; heavy imports happen inside the
handlers so that ``capscale --help`` stays fast.
"""
