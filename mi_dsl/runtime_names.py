"""Names the spec language shares with the runtime, importable without torch."""
METRICS = {
    "logit_diff": "logit of the answer minus logit of the foil at the final position (the seed's get_logit_diff)",
    "prob": "probability of the answer at the final position",
    "logprob": "log-probability of the answer at the final position",
    "rank": "rank of the answer among all tokens at the final position (0 = top)",
}
