"""edge-sr: lightweight super-resolution from PyTorch to edge devices through Apache TVM.

Importing it changes nothing in the process: the ``edge-sr`` command, ``tune`` and
``runtime.engine.load_local`` set TVM's thread pool up (``runtime.threads.prepare``); a
library caller that runs TVM modules by other means calls ``prepare()`` first.
"""

__version__ = "0.1.0"
