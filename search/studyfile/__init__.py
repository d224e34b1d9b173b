"""Study files: the pydantic schema of a TOML study (every key checked, errors named per key) and the sampling
of every defense's search space."""

from ._schema import MAX_NAME_LENGTH, StudyDefinition, format_validation_error, load_study_file, parse_study, registered
from ._spaces import (
    PRUNING,
    REFERENCE_SETTINGS,
    reference_params,
    space_for,
    suggest_pruning,
    suggest_setting,
    validate_overrides,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "PRUNING",
    "REFERENCE_SETTINGS",
    "StudyDefinition",
    "format_validation_error",
    "load_study_file",
    "parse_study",
    "reference_params",
    "registered",
    "space_for",
    "suggest_pruning",
    "suggest_setting",
    "validate_overrides",
]
