"""``python -m wrapcodec``."""

from wrapcodec.cli import main

main()
