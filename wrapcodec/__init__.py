"""wrapcodec: wrap standard video codecs in switchable pre- and post-processors."""

__version__ = "0.1.0"
