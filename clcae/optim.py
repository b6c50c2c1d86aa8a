"""Optimizers for the encoder: Ranger (as pSp and the official CLCAE train with), Adam, AdamW.

pSp's and CLCAE's ``training/ranger.py`` is lessw2020's Ranger 20.4.11: RAdam (betas 0.95,
0.999, eps 1e-5, rectification when the SMA length exceeds 5, decoupled weight decay) +
gradient centralisation of every weight with more than one dimension + Lookahead (k = 6,
alpha = 0.5). :class:`Ranger` here is ``torch.optim.RAdam`` with those settings (its update
is the same formula), the same gradient centralisation, and :class:`Lookahead`. What differs:
  - Lookahead counts optimizer steps; lessw2020's counts, per parameter, the steps where it had
    a gradient (the same when every parameter gets a gradient every step, as in the encoder);
  - ``step(closure)`` evaluates the closure (lessw2020's ignores it and returns None);
  - float32 state for float32 parameters (lessw2020's also keeps float32 copies of
    half-precision ones; torch's RAdam keeps the parameter's dtype).
tests/test_optim.py checks it against these formulas and, when installed, against
torch-optimizer's Ranger (pytorch_ranger, which has no gradient centralisation).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

OPTIMIZERS = ("ranger", "adam", "adamw")


def centralize_gradients(params: Iterable[torch.Tensor]) -> None:
    """Gradient centralisation (Yong et al. 2020), in place: the gradient of each weight with
    more than one dimension (linear, conv) loses its mean over all dimensions but the first."""
    for p in params:
        g = p.grad
        if g is not None and g.dim() > 1:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))


class Lookahead(Optimizer):
    """Lookahead (Zhang et al. 2019) around a base optimizer: every ``k`` steps the slow weights
    move ``alpha`` of the way to the fast ones, slow += alpha * (fast - slow), and the fast
    weights restart from there. Slow weights start as the weights at the first step.

    ``param_groups`` is the base's list (setting an LR here sets it there, and LR schedulers
    work); ``state_dict`` holds the base's state, the slow weights and the step counter, so a
    resumed run continues exactly.
    """

    def __init__(self, base: Optimizer, k: int = 6, alpha: float = 0.5):
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"Lookahead: k must be an integer >= 1, got {k!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Lookahead: alpha must lie in [0, 1], got {alpha}")
        super().__init__(base.param_groups, base.defaults)  # Optimizer's bookkeeping (hooks, state)
        self.base, self.k, self.alpha = base, k, alpha
        del self.__dict__["_init_groups"]  # from here on param_groups reads the base's
        self.steps = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base's groups (its load_state_dict replaces the list, so always read it there)."""
        base = self.__dict__.get("base")
        return base.param_groups if base is not None else self.__dict__["_init_groups"]

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:  # only Optimizer.__init__ sets it
        if "base" in self.__dict__:
            raise AttributeError("Lookahead.param_groups are the base optimizer's; set them there")
        self.__dict__["_init_groups"] = groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base" in self.__dict__:
            self.base.add_param_group(param_group)  # appears in self.param_groups: the same list
        else:  # inside Optimizer.__init__, registering the base's groups
            super().add_param_group(param_group)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        with torch.no_grad():
            for p in params:
                if "slow" not in self.state[p]:
                    self.state[p]["slow"] = p.detach().clone()
        self.base.step()
        self.steps += 1
        if self.steps % self.k == 0:
            with torch.no_grad():
                for p in params:
                    slow = self.state[p]["slow"]
                    slow.add_(p - slow, alpha=self.alpha)
                    p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        slow = {i: self.state[p]["slow"] for i, p in enumerate(self._params()) if "slow" in self.state[p]}
        return {"base": self.base.state_dict(),
                "lookahead": {"k": self.k, "alpha": self.alpha, "steps": self.steps, "slow": slow}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"base", "lookahead"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected a Lookahead state dict with keys "
                             f"['base', 'lookahead'], got {keys} (a plain optimizer's state dict?)")
        look = state_dict["lookahead"]
        params = self._params()
        slow = look["slow"]
        for i, tensor in slow.items():
            if not 0 <= int(i) < len(params) or tensor.shape != params[int(i)].shape:
                shape = list(params[int(i)].shape) if 0 <= int(i) < len(params) else "no such parameter"
                raise ValueError(f"{type(self).__name__}.load_state_dict: slow weight {i} has shape "
                                 f"{list(tensor.shape)}, the parameter {shape}")
        self.base.load_state_dict(state_dict["base"])
        self.k, self.alpha, self.steps = int(look["k"]), float(look["alpha"]), int(look["steps"])
        self.state = defaultdict(dict)
        for i, tensor in slow.items():
            p = params[int(i)]
            self.state[p]["slow"] = tensor.detach().to(device=p.device, dtype=p.dtype).clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, alpha={self.alpha}, base={self.base!r})"


class Ranger(Lookahead):
    """RAdam + gradient centralisation + Lookahead with lessw2020's defaults (module docstring)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5,
                 weight_decay: float = 0.0, k: int = 6, alpha: float = 0.5, centralize: bool = True):
        base = torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                 decoupled_weight_decay=True)
        if centralize:  # before every RAdam update, on the gradients the closure (if any) just made
            base.register_step_pre_hook(lambda opt, args, kwargs: centralize_gradients(
                p for group in opt.param_groups for p in group["params"]))
        super().__init__(base, k, alpha)
        self.centralize = centralize


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> Optimizer:
    """"ranger" (pSp/CLCAE's, decoupled weight decay), "adam" (L2 weight decay) or "adamw"."""
    if name == "ranger":
        return Ranger(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"make_optimizer: unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
