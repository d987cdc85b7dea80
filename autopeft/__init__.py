"""autopeft: multi-objective search of parameter-efficient fine-tuning configurations.

The command line (``autopeft search | pareto | trials | export | sync | ui``) is a thin layer over
:func:`autopeft.search.run_search`, :mod:`autopeft.pareto` and :func:`autopeft.export.export_trial`.
"""

__version__ = "0.1.0"
