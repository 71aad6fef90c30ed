"""``python -m streams`` runs the ``kpi`` command."""

from streams.cli import main

main()
