"""Cumulative-rewards Merkle tree, compatible with OpenZeppelin's StandardMerkleTree.

A leaf is ``keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))))``: the
double hash keeps a 64-byte inner node from passing for a leaf (second-preimage trap). Pairs are
hashed sorted, so proofs carry no left/right flags and `MerkleProof.verify` accepts them. The
tree is laid out like OpenZeppelin's (leaves sorted by hash, stored from the end of a flat array),
so the same earnings give the same root as `@openzeppelin/merkle-tree`.
"""

from __future__ import annotations

from collections.abc import Mapping

from eth_abi import encode
from eth_utils import keccak, to_checksum_address


def leaf_hash(account: str, cumulative_amount: int) -> bytes:
    return keccak(keccak(encode(["address", "uint256"], [to_checksum_address(account), cumulative_amount])))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


class RewardsTree:
    """Merkle tree over `{account: cumulative amount earned}`; empty earnings give a zero root."""

    def __init__(self, earnings: Mapping[str, int]) -> None:
        self.earnings = {to_checksum_address(a): int(v) for a, v in earnings.items()}
        if any(v < 0 for v in self.earnings.values()):
            raise ValueError("cumulative earnings cannot be negative")
        leaves = sorted(leaf_hash(a, v) for a, v in self.earnings.items())
        size = 2 * len(leaves) - 1 if leaves else 0
        tree: list[bytes] = [b""] * size
        for i, leaf in enumerate(leaves):
            tree[size - 1 - i] = leaf
        for i in range(size - len(leaves) - 1, -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = tree
        self._index = {leaf: size - 1 - i for i, leaf in enumerate(leaves)}

    def __eq__(self, other: object) -> bool:
        """Trees over the same earnings are the same tree (the layout is deterministic)."""
        return isinstance(other, RewardsTree) and other.earnings == self.earnings

    @property
    def root(self) -> bytes:
        return self._tree[0] if self._tree else bytes(32)

    def proof(self, account: str) -> list[bytes]:
        """Sibling hashes from the account's leaf up to the root."""
        account = to_checksum_address(account)
        if account not in self.earnings:
            raise KeyError(f"{account} has no earnings in this tree")
        index = self._index[leaf_hash(account, self.earnings[account])]
        proof = []
        while index > 0:
            sibling = index + 1 if index % 2 == 1 else index - 1
            proof.append(self._tree[sibling])
            index = (index - 1) // 2
        return proof


def verify(root: bytes, account: str, cumulative_amount: int, proof: list[bytes]) -> bool:
    """The same check as OpenZeppelin's MerkleProof.verify, in Python."""
    node = leaf_hash(account, cumulative_amount)
    for sibling in proof:
        node = _hash_pair(node, sibling)
    return node == root
