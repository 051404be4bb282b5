"""``python -m geosdm`` = the ``geosdm`` command."""

from geosdm.cli import app

app()
