"""Search spaces of the five baseline defenses (SPEC sections 8 and 10), added to ``spaces.SPACES``.

Their warm-start settings are the defenses' own defaults (the values usual in the literature), read from each
defense's settings model so the two never disagree.
"""

from __future__ import annotations

from wemem.defenses import DEFENSES

from .spaces import REFERENCE_SETTINGS, SPACES, Param

BASELINE_SPACES: dict[str, tuple[Param, ...]] = {
    "ppb": (Param("lambda_kl", 0.5, 16.0, log=True),),
    "advreg": (Param("theta", 0.5, 8.0), Param("k", 1, 10, integer=True)),  # k: inference steps per classifier step
    "dpsgd": (Param("sigma", 0.1, 4.0, log=True), Param("clip", 0.5, 5.0)),
    "relaxloss": (Param("alpha", 0.1, 3.0),),
    "hamp": (Param("gamma", 0.3, 0.99), Param("alpha", 1e-3, 1.0, log=True)),
}

SPACES.update(BASELINE_SPACES)
for _name, _params in BASELINE_SPACES.items():
    _defaults = DEFENSES.get(_name).Settings()
    REFERENCE_SETTINGS[_name] = {param.name: getattr(_defaults, param.name) for param in _params}
