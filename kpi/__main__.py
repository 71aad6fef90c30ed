"""``python -m kpi`` runs the ``kpi`` command."""

from kpi import main

main()
