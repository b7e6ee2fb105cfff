"""lastwill's version, in a module of its own so that any part of the package can read it without
importing the package's public API (lastwill/__init__.py imports the broker)."""

__version__ = "0.1.0"
