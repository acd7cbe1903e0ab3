"""syft_flwr: Flower federated learning over file-sync networks.

The two names upstream syft-flwr's notebooks call are here, as there:

>>> import syft_flwr
>>> syft_flwr.bootstrap("my_app", aggregator="ds@lab.org", datasites=["do@h.org"])  # doctest: +SKIP
>>> syft_flwr.run("my_app", ["data/mock"])  # doctest: +SKIP
"""

from __future__ import annotations

from syft_flwr._version import __version__

# As in upstream, the function names shadow their modules as attributes of the package; ``from syft_flwr.run
# import ...`` and ``from syft_flwr.bootstrap import ...`` still reach the modules.
from syft_flwr.bootstrap import bootstrap
from syft_flwr.run import run

__all__ = ["__version__", "bootstrap", "run"]
