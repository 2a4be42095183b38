"""fedmarket SDK: what the coordinator, trainer and validator nodes share.

Chain access, the content store and CIDs, the update codec, the task spec schema and
declarative models, scoring, consensus, aggregation and the round's records. Import from the submodules (``fedmarket.store``,
``fedmarket.codec``, ...); this package module stays light so that importing one part does not
pull in torch or web3.
"""
