"""streamwatch: keeps live-video streams healthy."""

__version__ = "0.1.0"
