"""Optuna's SQL storage as wemem uses it: URLs and secrets (:mod:`._urls`), every stored attribute with its reader
and writer (:mod:`._records`), and the trial heartbeats, stale-trial sweep and retries (:mod:`._heartbeat`)."""

from ._heartbeat import (GONE, SILENT, RetryInterruptedSetting, TrialHeartbeats, fail_dead_trials, fail_with_reason,
                        process_identity, process_is_gone, requeue, retried_from, retry_callback, running_trial_health,
                        trial_id_of)
from ._records import (FAIL_REASON, PROCESS_ATTR, NotAWememStudy, fail_reason, reference_of, stored_confirmation,
                      stored_definition, study_names, to_json)
from ._urls import (DEFAULT_STORAGE, GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, MAX_RETRY, MIN_GRACE_PERIOD_S,
                   check_storage_url, open_storage, redact, scrub, secrets_of, storage_error, storage_url)

__all__ = ["DEFAULT_STORAGE", "FAIL_REASON", "GONE", "GRACE_PERIOD_S", "HEARTBEAT_INTERVAL_S", "MAX_RETRY",
           "MIN_GRACE_PERIOD_S", "NotAWememStudy", "PROCESS_ATTR", "RetryInterruptedSetting", "SILENT",
           "TrialHeartbeats", "check_storage_url", "fail_dead_trials", "fail_reason", "fail_with_reason",
           "open_storage", "process_identity", "process_is_gone", "redact", "reference_of", "requeue", "retried_from",
           "retry_callback", "running_trial_health", "scrub", "secrets_of", "storage_error", "storage_url",
           "stored_confirmation", "stored_definition", "study_names", "to_json", "trial_id_of"]
