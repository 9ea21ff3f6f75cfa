"""The integer gene vector pymoo searches over, for one search space.

Layout: layer genes first (one keep flag per base layer in ``skip`` mode, else one kept-layer
count), then one width index per base layer (width genes of dropped layers are ignored on decode
and set to the largest width on encode). The codec only maps genes to (kept layers, widths) and
back; `SearchSpace` wraps the result in a `SubnetConfig` and validates it.

With deployment genes (`deploy_choices` = (attention formats, MLP formats, head formats, values
of each runtime property), see `hwnas.model.deploy_space`) the vector goes on with one
attention-format index per base layer, one MLP-format index per base layer (both ignored for
dropped layers, 0 on encode), one head-format index and one index per runtime property. A space
without them has exactly the old layout, so search folders written before them resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from hwnas.errors import InvalidSubnetError


@dataclass(frozen=True)
class GeneCodec:
    """Encode, decode and repair gene vectors of a space with these layers and widths."""

    num_layers: int
    widths: tuple[int, ...]
    layer_mode: str
    min_layers: int
    max_layers: int
    always_keep: tuple[int, ...]
    layer_order: tuple[int, ...] | None
    deploy_choices: tuple[int, ...] = ()   # (n attention formats, n MLP formats, n head formats, n per runtime gene...)

    @property
    def n_arch(self) -> int:
        """Genes of the architecture (layers and widths), the whole vector without deployment genes."""
        return (1 if self.layer_mode in ("prefix", "ranked") else self.num_layers) + self.num_layers

    @property
    def n_var(self) -> int:
        if not self.deploy_choices:
            return self.n_arch
        return self.n_arch + 2 * self.num_layers + 1 + len(self.deploy_choices) - 3

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer bounds of each variable: layer genes first, then one width index per base layer."""
        n = self.num_layers
        wmax = len(self.widths) - 1
        if self.layer_mode == "skip":
            xl = np.array([1 if i in self.always_keep else 0 for i in range(n)] + [0] * n)
            xu = np.array([1] * n + [wmax] * n)
        else:
            xl = np.array([self.min_layers] + [0] * n)
            xu = np.array([self.max_layers] + [wmax] * n)
        if self.deploy_choices:
            na, nm, nh, *nr = self.deploy_choices
            xl = np.concatenate([xl, np.zeros(2 * n + 1 + len(nr), dtype=int)])
            xu = np.concatenate([xu, [na - 1] * n, [nm - 1] * n, [nh - 1], [c - 1 for c in nr]])
        return xl, xu

    def kept_from_genes(self, x: np.ndarray) -> list[int]:
        """Kept layer indices that the layer genes of `x` stand for."""
        n = self.num_layers
        if self.layer_mode == "skip":
            return [i for i in range(n) if x[i] >= 1]
        k = int(x[0])
        if self.layer_mode == "prefix":
            return list(range(k))
        assert self.layer_order is not None
        return sorted(self.layer_order[:k])

    def layers_for_count(self, k: int, rng: np.random.Generator | None) -> tuple[int, ...]:
        """Which `k` layers to keep: fixed by the mode, or random (deepest dropped first without `rng`) in skip mode."""
        if self.layer_mode == "prefix":
            return tuple(range(k))
        if self.layer_mode == "ranked":
            assert self.layer_order is not None
            return tuple(sorted(self.layer_order[:k]))
        free = [i for i in range(self.num_layers) if i not in self.always_keep]
        extra = k - len(self.always_keep)
        if rng is None:  # deterministic choice: drop the deepest non-fixed layers first
            chosen = free[:extra]
        else:
            chosen = list(rng.choice(free, size=extra, replace=False))
        return tuple(sorted(set(self.always_keep) | {int(i) for i in chosen}))

    def encode(self, layers: Iterable[int], mlp_widths: Iterable[int],
               deploy: tuple[Iterable[int], Iterable[int], int, Iterable[int]] | None = None) -> np.ndarray:
        """Integer vector of already validated kept layers and their widths; with deployment genes,
        `deploy` = (attention-format index per kept layer, MLP-format index per kept layer, head index,
        runtime value indices)."""
        layers, mlp_widths = tuple(layers), tuple(mlp_widths)
        n = self.num_layers
        widx = {w: i for i, w in enumerate(self.widths)}
        wgenes = [len(self.widths) - 1] * n
        for layer, w in zip(layers, mlp_widths):
            wgenes[layer] = widx[w]
        if self.layer_mode == "skip":
            lgenes = [1 if i in layers else 0 for i in range(n)]
        else:
            lgenes = [len(layers)]
        if not self.deploy_choices:
            return np.array(lgenes + wgenes, dtype=int)
        if deploy is None:
            raise InvalidSubnetError("this search space has deployment genes; the subnet must carry them")
        attn, mlp, head, runtime = (tuple(int(v) for v in deploy[0]), tuple(int(v) for v in deploy[1]),
                                    int(deploy[2]), tuple(int(v) for v in deploy[3]))
        agenes, mgenes = [0] * n, [0] * n
        for layer, a, m in zip(layers, attn, mlp):
            agenes[layer], mgenes[layer] = a, m
        return np.array(lgenes + wgenes + agenes + mgenes + [head] + list(runtime), dtype=int)

    def decode(self, x: Iterable[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(kept layers, widths) of a vector; raises InvalidSubnetError for a wrong length or a gene out of bounds."""
        x = np.asarray(list(x), dtype=int)
        if x.shape != (self.n_var,):
            raise InvalidSubnetError(f"encoded subnet must have {self.n_var} integers, got {x.shape[0]}")
        xl, xu = self.bounds()
        if np.any(x < xl) or np.any(x > xu):
            i = int(np.argmax((x < xl) | (x > xu)))
            raise InvalidSubnetError(f"encoded gene {i} = {x[i]} is outside {xl[i]}..{xu[i]}")
        kept = self.kept_from_genes(x)
        off = self.n_arch - self.num_layers
        widths = [self.widths[int(x[off + i])] for i in kept]
        return tuple(kept), tuple(widths)

    def decode_deploy(self, x: Iterable[int], kept: Iterable[int]) -> tuple[tuple[int, ...], tuple[int, ...], int, tuple[int, ...]]:
        """(attention-format index per kept layer, MLP-format index per kept layer, head index, runtime indices)."""
        if not self.deploy_choices:
            raise InvalidSubnetError("this search space has no deployment genes")
        x = np.asarray(list(x), dtype=int)
        n, a0 = self.num_layers, self.n_arch
        kept = tuple(kept)
        return (tuple(int(x[a0 + i]) for i in kept), tuple(int(x[a0 + n + i]) for i in kept), int(x[a0 + 2 * n]),
                tuple(int(v) for v in x[a0 + 2 * n + 1:]))

    def identity(self, x: Iterable[int]) -> tuple:
        """What subnet a (repaired) vector stands for, cheaply: genes of dropped layers do not count."""
        x = np.asarray(list(x), dtype=int)
        kept = self.kept_from_genes(x)
        off = self.n_arch - self.num_layers
        ident: tuple = (tuple(kept), tuple(int(x[off + i]) for i in kept))
        if self.deploy_choices:
            ident += self.decode_deploy(x, kept)
        return ident

    def repair(self, x: Iterable[int], rng: np.random.Generator | None = None) -> np.ndarray:
        """Clip to bounds and fix the kept-layer count in skip mode, so any vector decodes."""
        x = np.asarray(list(x), dtype=int).copy()
        xl, xu = self.bounds()
        x = np.clip(x, xl, xu)
        if self.layer_mode != "skip":
            return x
        rng = rng or np.random.default_rng(0)
        n = self.num_layers
        free = [i for i in range(n) if i not in self.always_keep]
        k = int(x[:n].sum())
        if k > self.max_layers:
            on = [i for i in free if x[i] == 1]
            for i in rng.choice(on, size=k - self.max_layers, replace=False):
                x[i] = 0
        elif k < self.min_layers:
            off = [i for i in free if x[i] == 0]
            for i in rng.choice(off, size=self.min_layers - k, replace=False):
                x[i] = 1
        return x
