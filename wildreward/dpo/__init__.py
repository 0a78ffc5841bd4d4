"""Online DPO (``wildreward dpo``, paper §3.6): sample n responses per prompt from the policy, score them with the
served reward model, train on best-vs-worst pairs with the DPO loss against the frozen initial policy.

This package holds the pure parts, each unit-tested: pair construction (``pairs``), the log-prob and loss math
(``loss``), prompt loading (``prompts``), judge-free instruction checks for evaluation (``checks``) and the
stage config (``config``).
"""
