"""The five baseline defenses the paper compares WeMeM against (SPEC section 8), one module each.

Importing this package registers ``ppb``, ``advreg``, ``dpsgd``, ``relaxloss`` and ``hamp``. All of them act
during the fine-tuning of every pruning round, through the same hooks as the WeMeM defenses, so they are pruned,
attacked, timed and searched exactly like them.
"""

from . import advreg, dpsgd, hamp, ppb, relaxloss  # noqa: F401  (each module registers its defense)
