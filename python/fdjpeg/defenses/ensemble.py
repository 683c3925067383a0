"""Ensembles of (defense, classifier) pairs with majority voting.

Zhang & Gao (arXiv 2106.13394) fine-tune a classifier on images compressed at several levels, one
model per level, and take the majority vote of the ensemble; SHIELD's "vaccinated" ensemble
(Das et al. 2018) is the same recipe with JPEG qualities. :class:`MajorityVote` combines any such
members; :func:`load_fashion_ensemble` loads the members that ``fdjpeg train-ensemble`` trained on
Fashion-MNIST (JPEG qualities 20, 40, 60, 80) and that ship with fdjpeg.

Tie-break: when two or more classes have the most votes, the label is the one among them with the
largest probability summed over all members (softmax of each member's logits); an exact tie of
those sums goes to the lowest class index.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .._pipeline import nhwc_to_nchw

ENSEMBLE_QUALITIES = (20, 40, 60, 80)
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
FASHION_ENSEMBLE_FILE = os.path.join(WEIGHTS_DIR, "ensemble_fashion_jpeg.safetensors")

Member = Tuple[Optional[Callable[[Any], Any]], Callable[[torch.Tensor], torch.Tensor]]


class VoteResult(NamedTuple):
    """labels (N,), votes (N x classes member counts), agreement (N,: share of members voting for the
    label), probabilities (N x classes: softmax summed over members, divided by the member count)."""

    labels: torch.Tensor
    votes: torch.Tensor
    agreement: torch.Tensor
    probabilities: torch.Tensor


def vote(logits: torch.Tensor) -> VoteResult:
    """Majority vote of members' logits (M members x N images x K classes) with the documented tie-break."""
    if logits.ndim != 3 or logits.shape[0] < 1:
        raise ValueError(f"logits must be M members x N images x K classes, got shape {tuple(logits.shape)}")
    members, _, classes = logits.shape
    probs = F.softmax(logits.double(), dim=2).sum(0)
    votes = F.one_hot(logits.argmax(2), classes).sum(0)
    top = votes == votes.max(1, keepdim=True).values
    labels = torch.where(top, probs, torch.full_like(probs, -1.0)).argmax(1)  # argmax: first of exact ties
    agreement = votes.gather(1, labels[:, None])[:, 0].double() / members
    return VoteResult(labels, votes, agreement, probs / members)


class MajorityVote:
    """Ensemble of ``members``: each a ``(defense, classifier)`` pair.

    ``defense`` maps images to images (any fdjpeg defense, or None for none); ``classifier`` maps a
    float N x C x H x W tensor in [0, 1] to N x K logits. Calling the ensemble on images (torch
    NCHW, or numpy NHWC / N x H x W grey, uint8 or float) returns a :class:`VoteResult`, computed in
    batches of ``batch_size``.
    """

    def __init__(self, members: Sequence[Member], batch_size: int = 500) -> None:
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one (defense, classifier) member")
        for i, m in enumerate(members):
            if not (isinstance(m, (tuple, list)) and len(m) == 2 and callable(m[1]) and (m[0] is None or callable(m[0]))):
                raise TypeError(f"member {i} must be a (defense or None, classifier) pair, got {m!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.members: List[Member] = [tuple(m) for m in members]
        self.batch_size = batch_size

    def member_logits(self, x: Any) -> torch.Tensor:
        """Logits of every member: M x N x K."""
        x = as_nchw(x)
        rows = []
        for defense, classifier in self.members:
            parts = []
            for start in range(0, len(x), self.batch_size):
                chunk = x[start : start + self.batch_size]
                defended = chunk if defense is None else defense(chunk)
                with torch.no_grad():
                    parts.append(classifier(to_float(defended)).float())
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def __call__(self, x: Any) -> VoteResult:
        return vote(self.member_logits(x))

    def predict(self, x: Any) -> torch.Tensor:
        return self(x).labels

    def __len__(self) -> int:
        return len(self.members)

    def as_classifier(self) -> "VotingClassifier":
        """The ensemble as an ``nn.Module`` classifier (see :class:`VotingClassifier`)."""
        return VotingClassifier(self)


class VotingClassifier(nn.Module):
    """A :class:`MajorityVote` as a classifier module: ``forward(x)`` (float N x C x H x W in [0, 1])
    returns scores ``votes + summed probabilities / (members + 1)``, whose argmax is exactly the
    vote with its tie-break (the probability term is below one vote). Gradients flow through the
    members' probabilities (and straight through their defenses), so attacks can target the vote."""

    def __init__(self, ensemble: MajorityVote) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.members = nn.ModuleList([c for _, c in ensemble.members if isinstance(c, nn.Module)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([classifier(to_float(x if d is None else d(x))) for d, classifier in self.ensemble.members])
        classes = logits.shape[2]
        votes = F.one_hot(logits.argmax(2), classes).sum(0).to(logits.dtype)
        return votes + F.softmax(logits, dim=2).sum(0) / (logits.shape[0] + 1)


def as_nchw(x: Any) -> torch.Tensor:
    """Images as an N x C x H x W tensor of their dtype: torch NCHW / CHW, or numpy NHWC, HWC or
    N x H x W (grey: a last axis that is not 1, 3 or 4 channels)."""
    if isinstance(x, np.ndarray):
        arr = x[..., None] if x.ndim == 3 and x.shape[-1] not in (1, 3, 4) else x
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4:
            raise ValueError(f"numpy images must be NHWC, HWC or N x H x W grey, got shape {x.shape}")
        t = nhwc_to_nchw(torch.from_numpy(np.array(arr, copy=True)))  # a copy: input may be read-only
    elif isinstance(x, torch.Tensor):
        t = x[None] if x.ndim == 3 else x
        if t.ndim != 4:
            raise ValueError(f"torch images must be NCHW or CHW, got shape {tuple(x.shape)}")
    else:
        raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__module__}.{type(x).__name__}")
    return t


def to_float(x: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1] (uint8 / 255)."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


# ------------------------------------------------------------------------------------------------
# The shipped Fashion-MNIST ensemble (JPEG-vaccinated FashionCNN members)


def jpeg_defense(quality: int) -> Callable[[Any], Any]:
    """The JPEG round trip a member was fine-tuned on (grey images: luma only)."""
    return lambda x: ops.jpeg(x, quality)


def save_members(models: Sequence[nn.Module], qualities: Sequence[int], path: str, metadata: Optional[dict] = None) -> None:
    """All members' weights in one safetensors file (keys ``q<quality>.<parameter>``)."""
    from safetensors.torch import save_file

    tensors = {f"q{q}.{k}": v.detach().contiguous().cpu() for q, m in zip(qualities, models) for k, v in m.state_dict().items()}
    meta = {"qualities": ",".join(str(q) for q in qualities), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file(tensors, path, metadata=meta)


def load_fashion_ensemble(path: str = FASHION_ENSEMBLE_FILE, batch_size: int = 500) -> MajorityVote:
    """The JPEG-vaccinated Fashion-MNIST ensemble: member q = (JPEG at quality q, FashionCNN
    fine-tuned on JPEG-q images), for the qualities stored in the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..models import FashionCNN

    if not os.path.exists(path):
        raise FileNotFoundError(f"no ensemble weights at {path}; train them with `fdjpeg train-ensemble --out {path}`")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    qualities = [int(q) for q in meta["qualities"].split(",")]
    state = load_file(path)
    members = []
    for q in qualities:
        model = FashionCNN()
        prefix = f"q{q}."
        model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        for p in model.parameters():
            p.requires_grad_(False)
        members.append((jpeg_defense(q), model.eval()))
    ensemble = MajorityVote(members, batch_size)
    ensemble.qualities = qualities
    ensemble.metadata = meta
    return ensemble


__all__ = ["MajorityVote", "VotingClassifier", "VoteResult", "vote", "as_nchw", "to_float", "jpeg_defense", "save_members",
           "load_fashion_ensemble", "ENSEMBLE_QUALITIES", "FASHION_ENSEMBLE_FILE"]
