"""fedmarket SDK: what the coordinator and trainer nodes share.

Chain access, the content store and CIDs, the update codec, the Merkle tree, the task spec
schema and declarative models. Import from the submodules (``fedmarket.store``,
``fedmarket.codec``, ...); this package module stays light so that importing one part does not
pull in torch or web3.
"""
