"""The ``kpi`` command: the product's and the tooling's sub-commands behind one entry point."""
