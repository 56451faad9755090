"""ltjax: lottery-ticket research in JAX/Flax.

Pure functions over parameter and mask pytrees (``masks``, ``scores``, ``pruning``), a
scan-fused masked trainer (``train``), and the IMP / LTR round loop (``lottery``) that
trains many tickets in one compiled, vmapped program and saves every round (``store``).
Pruning at initialization (``snip``), layerwise-importance analysis (``analysis``) and
early-ticket studies on one watched training run (``early``, ``early_study``) build on them.
``save_ticket`` writes one ticket (its mask and the weights it starts from) to a ``.npz``
that NumPy reads alone.
"""

from ltjax import masks, models, pruning, scores, stopping
from ltjax.config import Config, ConfigError
from ltjax.store import Run, load_run
from ltjax.ticket import Ticket, load_ticket, save_ticket

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "Run", "Ticket", "load_run", "load_ticket", "masks", "models", "pruning",
           "save_ticket", "scores", "stopping"]
