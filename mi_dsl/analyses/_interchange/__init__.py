"""The interchange analysis's engine (analyses/interchange.py is the registered kind).

settings.py    parameters: the schema part, and `Settings`, the one place compute reads them
sites.py       component x layer x named position (x head), resolved in every base and source prompt
engine.py      inputs shared by every forward (padded prompts, source activations, prefix residuals),
               the interchange hook (full vector or through W), candidate logits
evaluate.py    many sites and featurizers stacked in the batch, layer by layer; the base runs alone
featurizers.py DAS's rotation, PCA, a random subspace
train.py       training a DAS rotation (seeded, early stopping)
score.py       IIA (changed / unchanged labels) and the logit difference toward the label
summary.py     the result's data, tables, convention, saved subspaces
saved.py       safetensors files with provenance, and reading them back
figures.py     IIA heatmaps, loss curves
cost.py        the plan's estimate of DAS training time and memory
"""
