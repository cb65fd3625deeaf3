"""Featurizers: a k-dimensional subspace of a site's activation, as W [d, k] with orthonormal columns.

  das     a learned orthogonal rotation's first k coordinates (distributed alignment search, Geiger
          et al.): W is the weight of a low-rank rotation layer under torch's orthogonal
          parametrization (as pyvene's LowRankRotatedSpaceIntervention holds it), initialised by
          torch.nn.init.orthogonal_ from a seeded generator and trained (train.py)
  pca     the top k principal components of the source run's activations at the site over the
          training examples (centred), a baseline that knows the activations but not the variable
  random  a seeded random orthonormal k-dimensional subspace (QR of a Gaussian matrix): chance level
"""
from __future__ import annotations

import torch


class Rotation(torch.nn.Module):
    """x -> x @ weight, weight [d, k] kept orthonormal by torch's orthogonal parametrization.

    Both the initial matrix (orthogonal_) and the parametrization's registration draw from the global
    random generator (the registration completes W to a d x d orthogonal base with torch.randn): both
    run under `seed` in a forked generator, so a seed fixes the whole rotation and nothing else moves
    (the same two steps, under torch.manual_seed, build pyvene's rotation)."""

    def __init__(self, d: int, k: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            weight = torch.empty(d, k)
            torch.nn.init.orthogonal_(weight)
            self.weight = torch.nn.Parameter(weight)
            torch.nn.utils.parametrizations.orthogonal(self, "weight")

    @property
    def W(self) -> torch.Tensor:
        return self.weight


def pca(activations: torch.Tensor, k: int) -> torch.Tensor:
    """[d, k] the top-k principal directions of activations [N, d] (centred; float64 SVD)."""
    x = activations.double()
    x = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    if vh.shape[0] < k:
        raise ValueError(f"PCA of {x.shape[0]} activations has fewer than {k} components")
    return _signed(vh[:k].T).float()


def random_subspace(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q.float()


def _signed(W: torch.Tensor) -> torch.Tensor:
    """A fixed sign per column (largest entry positive): SVD's signs are arbitrary, saved files need not be."""
    index = W.abs().argmax(0)
    signs = torch.sign(W[index, torch.arange(W.shape[1])])
    return W * torch.where(signs == 0, torch.ones_like(signs), signs)
