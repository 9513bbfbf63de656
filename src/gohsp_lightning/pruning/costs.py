"""What a plan removes when structures slice the same tensors (residual channels cross heads and neurons).

A head owns rows of ``qkv``, a channel its columns: what is left of that tensor is ``numel`` times the
product of the two kept shares, so the cost of a unit depends on what else goes. Every tensor any
structure slices is one :class:`Term`; summing them gives the exact parameters or FLOPs removed, which
equals the per-unit costs' sum whenever only one structure slices each tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .structures import STRUCTURES
from .units import BlockUnits


@dataclass(frozen=True)
class Term:
    """One tensor's dense cost (or one structure's extra FLOPs) and the structures that slice it."""

    cost: int
    shares: tuple[tuple[str, int, int], ...]  # (structure, owner position, units along its axis)


def cost_terms(blocks: list[BlockUnits], unit: str, tokens: int) -> list[Term]:
    """Every tensor the structures slice, with its dense cost in ``unit`` (``params`` or ``flops`` per image)."""
    found: dict[tuple[int, str], tuple[int, dict[tuple[str, int], int]]] = {}
    extra: list[Term] = []
    for name, s in STRUCTURES.items():
        for position, owner in enumerate(s.owners(blocks)):
            for piece in s.layout(owner).slices:
                if unit == "params":
                    cost = piece.tensor.numel() if piece.is_parameter else 0
                else:
                    cost = 2 * s.positions(piece, owner, tokens) * piece.tensor.numel()
                _, shares = found.setdefault((id(piece.owner), piece.attr), (cost, {}))
                shares[(name, position)] = piece.units
            if unit == "flops" and s.extra_flops(owner, tokens):
                units = s.size(owner)
                extra.append(Term(s.extra_flops(owner, tokens) * units, ((name, position, units),)))
    terms = [Term(cost, tuple((n, p, u) for (n, p), u in shares.items())) for cost, shares in found.values() if cost]
    return terms + extra


def removed_by_terms(terms: list[Term], counts: Mapping[str, Sequence[int]]) -> int:
    """Cost removed when owner ``p`` of structure ``name`` keeps ``counts[name][p]`` units (others: all)."""
    return sum(term.cost - _left(term, counts) for term in terms)


def _left(term: Term, counts: Mapping[str, Sequence[int]]) -> int:
    left = term.cost
    for name, position, units in term.shares:
        if name in counts:
            left = left // units * counts[name][position]  # exact: the tensor holds every unit equally
    return left


class RemovedCost:
    """The exact cost removed as units go one at a time, for a greedy walk: a unit's step recomputes only
    the terms its structure's owner slices, so asking what one more unit would remove is cheap."""

    def __init__(self, terms: list[Term], sizes: Mapping[str, Sequence[int]]) -> None:
        self._terms = terms
        self._counts = {name: list(kept) for name, kept in sizes.items()}
        self._left = [_left(term, self._counts) for term in terms]
        self._touching: dict[tuple[str, int], list[int]] = {}
        for i, term in enumerate(terms):
            for name, position, _ in term.shares:
                if name in self._counts:
                    self._touching.setdefault((name, position), []).append(i)
        self.removed = sum(term.cost for term in terms) - sum(self._left)

    def after(self, name: str, position: int) -> int:
        """The removed cost if one more unit of owner ``position`` of structure ``name`` went."""
        return self.removed + sum(self._left[i] - left for i, left in self._stepped(name, position))

    def take(self, name: str, position: int) -> None:
        """Remove one unit of owner ``position`` of structure ``name``."""
        for i, left in self._stepped(name, position):
            self.removed += self._left[i] - left
            self._left[i] = left
        self._counts[name][position] -= 1

    def _stepped(self, name: str, position: int) -> list[tuple[int, int]]:
        self._counts[name][position] -= 1
        stepped = [(i, _left(self._terms[i], self._counts)) for i in self._touching.get((name, position), [])]
        self._counts[name][position] += 1
        return stepped
