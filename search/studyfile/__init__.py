"""Study files: the pydantic schema of a TOML study (every key checked, errors named per key) and the search
space of every defense."""

from .schema import MAX_NAME_LENGTH, StudyDefinition, format_validation_error, load_study_file, parse_study, registered
from .spaces import REFERENCE_SETTINGS, SPACES, Param, reference_params, space_for, suggest_setting, validate_overrides

__all__ = ["MAX_NAME_LENGTH", "Param", "REFERENCE_SETTINGS", "SPACES", "StudyDefinition", "format_validation_error",
           "load_study_file", "parse_study", "reference_params", "registered", "space_for", "suggest_setting",
           "validate_overrides"]
