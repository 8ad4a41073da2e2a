"""The ``exptrain`` command-line tools: train, list, compare, evaluate, export, predict.

``main.py`` parses the command line and dispatches; ``listing.py`` and ``compare.py``
read the records runs write (status, config, log, lineage); ``checkpoints.py`` rebuilds
a model from a checkpoint alone, which ``evaluate.py``, ``predict.py`` and ``export.py``
use. Every tool is read-only towards experiments, except that ``evaluate`` and
``export`` add their own output folder to one that no live process is training in.
"""
