"""A study: where it lives and runs (:mod:`._place`, with the :class:`OpenStudy` object every command passes on),
creating, loading and opening it with its sampler and pruner (:mod:`._lifecycle`), and ranking its trials
(:mod:`._ranking`)."""

from ._lifecycle import (NOT_IDENTITY, create_or_load_study, definition_differences, load_study, make_pruner,
                        make_sampler, open_study, refuse_conflicting, withdraw_new_study)
from ._place import (LAUNCHER_RESOURCES, OpenStudy, Options, Place, holds_wemem_cache, resolve_cache_dir,
                    resolve_data_root)
from ._ranking import (active_count, best_default, best_trials, completed, feasible_or_all, is_feasible,
                      is_paper_default, ranked_trials, running_numbers, top_trials)

__all__ = ["LAUNCHER_RESOURCES", "NOT_IDENTITY", "OpenStudy", "Options", "Place", "active_count", "best_default",
           "best_trials", "completed", "create_or_load_study", "definition_differences", "feasible_or_all",
           "holds_wemem_cache", "is_feasible", "is_paper_default", "ranked_trials", "load_study", "make_pruner",
           "make_sampler", "open_study", "refuse_conflicting", "resolve_cache_dir", "resolve_data_root",
           "running_numbers", "top_trials", "withdraw_new_study"]
