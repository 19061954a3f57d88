"""``slimkit.autotune``: per-layer sensitivity, a knapsack under the accuracy budget, verified
trials that back off or push layer by layer (:mod:`.api`); candidates built with the public
verbs (:mod:`.build`), the allocation (:mod:`.search`), resumable records (:mod:`.records`)."""
from .api import METHODS, OBJECTIVES, autotune
from .checks import check_methods

__all__ = ["METHODS", "OBJECTIVES", "autotune", "check_methods"]
