"""Built-in codec backends (installed as ``wrapcodec.backends``), one module per codec."""
