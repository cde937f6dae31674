"""Risk profiles, tenant policy files, and the threshold, utility and BAS math.

Pure and framework-free: imports neither the gateway (``proxy``) nor the calibrators.
"""

from .bas import BASWeight, bas_scores, behavioral_alignment_score
from .check import PolicyCheck, TenantSummary, check_policy_file, format_policy_summary
from .errors import PolicyError, PolicyProblem
from .loader import load_policy_file, load_yaml_model, parse_policy_text
from .profiles import PRESETS, RiskProfile
from .schema import ApiKeyRef, CalibratorRefs, PolicyFile, RiskPolicy, TenantPolicy
from .utility import (
    expected_utility,
    expected_utility_scalar,
    optimal_threshold,
    realized_utility,
    realized_utility_scalar,
    should_answer,
    wrong_answer_cost_for_threshold,
)

__all__ = [
    "PRESETS",
    "ApiKeyRef",
    "BASWeight",
    "CalibratorRefs",
    "PolicyCheck",
    "PolicyError",
    "PolicyFile",
    "PolicyProblem",
    "RiskPolicy",
    "RiskProfile",
    "TenantPolicy",
    "TenantSummary",
    "bas_scores",
    "behavioral_alignment_score",
    "check_policy_file",
    "expected_utility",
    "expected_utility_scalar",
    "format_policy_summary",
    "load_policy_file",
    "load_yaml_model",
    "optimal_threshold",
    "parse_policy_text",
    "realized_utility",
    "realized_utility_scalar",
    "should_answer",
    "wrong_answer_cost_for_threshold",
]
