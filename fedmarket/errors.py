"""The one exception tree of the fedmarket SDK.

Catch ``FedmarketError`` to catch everything the SDK raises on purpose; catch a branch to handle
one kind of failure. Errors that mean "the input was malformed" are also ``ValueError`` so that
generic callers (argument parsers, web frameworks) treat them as bad input, not as crashes::

    FedmarketError
    ├── StoreError                     content store failures
    │   ├── BlobNotFoundError          no blob with that CID
    │   ├── CorruptBlobError           bytes do not hash to their CID
    │   ├── BlobTooLargeError          blob over the store's size limit
    │   └── StoreUnavailableError      store cannot be reached (after retries)
    ├── InvalidCIDError (ValueError)   not a CIDv1 raw sha2-256 identifier
    ├── SpecError (ValueError)         task spec violates the schema
    ├── ModelBuildError (ValueError)   declared layers do not fit together
    ├── DataMismatchError (ValueError) local or validation data does not fit the task spec
    ├── CodecError (ValueError)        bytes are not a valid update/model blob
    │   ├── UpdateMismatchError        tensor names, shapes, dtypes or metadata differ
    │   └── NonFiniteUpdateError       a tensor holds NaN or infinity
    ├── CompilationError               the Solidity sources did not compile (solc's errors inside)
    ├── InvalidKeyError (ValueError)   a private key is not exactly 32 bytes of hex (fedmarket.keys)
    ├── OwnerInputError (ValueError)   an owner's key, amount, spec or data file cannot be used (fedmarket.owner)
    └── ChainError                     talking to the chain failed
        ├── ContractRevert             a contract call reverted with a custom error
        ├── TransactionFailed          a transaction was not mined or failed
        ├── ChainUnavailableError      the node could not be reached or gave no usable answer
        └── DeploymentNotFoundError    no deployment record for the network

Every message says what was wrong and, where there is something to do, what to do.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BlobNotFoundError",
    "BlobTooLargeError",
    "ChainError",
    "ChainUnavailableError",
    "CodecError",
    "CompilationError",
    "ContractRevert",
    "CorruptBlobError",
    "DataMismatchError",
    "DeploymentNotFoundError",
    "FedmarketError",
    "InvalidCIDError",
    "ModelBuildError",
    "NonFiniteUpdateError",
    "SpecError",
    "StoreError",
    "StoreUnavailableError",
    "TransactionFailed",
    "UpdateMismatchError",
]


class FedmarketError(Exception):
    """Root of every error the SDK raises on purpose, so callers can catch them in one place."""


# --- content store -------------------------------------------------------------------------------


class StoreError(FedmarketError):
    """A content store could not complete a put, get, has or size."""


class BlobNotFoundError(StoreError):
    """The store holds no blob with this CID: the uploader has not put it yet, or it is elsewhere."""

    def __init__(self, cid: str, *, where: str) -> None:
        self.cid = cid
        super().__init__(f"blob {cid} is not in {where}: check the CID, or upload the blob first")


class CorruptBlobError(StoreError):
    """Bytes read for a CID do not hash to it: the copy is damaged or the server lies. Never use them."""

    def __init__(self, cid: str, *, actual_cid: str, where: str) -> None:
        self.cid = cid
        self.actual_cid = actual_cid
        super().__init__(
            f"blob {cid} at {where} is really {actual_cid}: that copy is corrupt (damaged on disk or "
            "in transit, or altered by the server); do not use it, upload or fetch the blob again"
        )


class BlobTooLargeError(StoreError):
    """A blob is over the store's size limit; refused before anything was kept."""

    def __init__(self, *, limit: int | None, size: int | None = None, where: str) -> None:
        self.limit = limit
        self.size = size
        got = "more" if size is None else f"{size} bytes, more"
        allowed = "its size limit" if limit is None else f"the limit of {limit} bytes"
        super().__init__(
            f"blob refused by {where}: {got} than {allowed}; make the blob smaller or raise max_blob_bytes"
        )


class StoreUnavailableError(StoreError):
    """The store could not be reached or kept failing after every retry."""

    def __init__(self, *, where: str, attempts: int, reason: str) -> None:
        self.attempts = attempts
        self.reason = reason
        super().__init__(
            f"store at {where} unavailable after {attempts} attempt(s) ({reason}); "
            "check that the coordinator is running and the URL is right, then retry"
        )


# --- identifiers, specs, models, codec ----------------------------------------------------------


class InvalidCIDError(FedmarketError, ValueError):
    """A string is not the kind of CID fedmarket uses (CIDv1, raw codec, sha2-256, 32-byte digest)."""


class SpecError(FedmarketError, ValueError):
    """A task spec breaks the schema; ``field`` is the dotted path of the first problem."""

    def __init__(self, field: str, reason: str, *, problems: list[tuple[str, str]] | None = None) -> None:
        self.field = field
        self.reason = reason
        self.problems = problems if problems else [(field, reason)]
        listed = "; ".join(f"{where or '<spec>'}: {why}" for where, why in self.problems)
        super().__init__(f"invalid task spec: {listed}. Fix these fields and submit the spec again")


class ModelBuildError(FedmarketError, ValueError):
    """The layers a spec declares cannot form a model: shapes do not chain, or it is too big."""


class DataMismatchError(FedmarketError, ValueError):
    """Data does not fit the task: wrong shape, labels, values or file layout.

    The message names the problem and what the task expects; fix the file (or pick the right
    task) and start again. Nothing has been trained, sent or stored when this is raised.
    """


class CodecError(FedmarketError, ValueError):
    """Bytes are not a well-formed fedmarket blob: an update or model (safetensors with our metadata), a report."""


class UpdateMismatchError(CodecError):
    """Tensors or metadata do not match what was expected: names, shapes, dtypes, task, round, trainer.

    Raised for model blobs as well as updates: both must match the task's model exactly.
    """


class NonFiniteUpdateError(CodecError):
    """A tensor holds NaN or infinity; one such value would poison every aggregate it enters."""


class CompilationError(FedmarketError):
    """The Solidity sources did not compile; the message carries solc's errors."""


# --- chain ---------------------------------------------------------------------------------------


class ChainError(FedmarketError):
    """Talking to the chain failed: a revert, a failed transaction, an unreachable node, a missing
    deployment. Nothing the SDK does on the chain raises anything else (see :mod:`fedmarket.chain`)."""


class ContractRevert(ChainError):
    """A contract call reverted with a custom error, decoded to its name and named arguments.

    ``str()`` reads like the Solidity error, e.g. ``TaskMarketWrongPhase(taskId=1, phase=2)``, so
    logs and API responses name the exact rule that was broken. ``args`` is a dict of the error's
    arguments by name (it replaces ``BaseException.args``, which would be a bare tuple), and
    ``selector`` the 4-byte error selector as ``0x``-hex when known.
    """

    def __init__(self, name: str, args: dict[str, Any], *, selector: str | None = None) -> None:
        self.name = name
        self.revert_args = dict(args)
        self.selector = selector
        # BaseException keeps (name, args) for pickling; ``self.args`` reads the dict below.
        super().__init__(name, self.revert_args)

    @property
    def args(self) -> dict[str, Any]:  # type: ignore[override]
        """The custom error's arguments by name."""
        return self.revert_args

    def __str__(self) -> str:
        listed = ", ".join(f"{key}={_format_arg(value)}" for key, value in self.revert_args.items())
        return f"{self.name}({listed})"

    def __repr__(self) -> str:
        return f"ContractRevert({self})"


def _format_arg(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_arg(item) for item in value) + "]"
    return str(value)


class TransactionFailed(ChainError):
    """A transaction was sent but failed or was never mined; ``tx_hash`` names it when known."""

    def __init__(self, message: str, *, tx_hash: str | None = None) -> None:
        self.tx_hash = tx_hash
        super().__init__(message if tx_hash is None else f"{message} (transaction {tx_hash})")


class ChainUnavailableError(ChainError):
    """The JSON-RPC endpoint could not be reached, timed out, or answered with an error that is not a
    revert. Nothing about the request itself was wrong: the same call may succeed once the node is back.

    ``endpoint`` is the URL (or provider) that failed, ``reason`` what went wrong at the bottom
    (``[Errno 111] Connection refused``), ``doing`` what the SDK was asking for when it did.
    """

    def __init__(self, *, endpoint: str, reason: str, doing: str | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.doing = doing
        during = f" while {doing}" if doing else ""
        super().__init__(
            f"cannot reach the chain at {endpoint}{during} ({reason}): is the node running? "
            "check FEDMARKET_RPC_URL (or --rpc-url) and retry"
        )


class DeploymentNotFoundError(ChainError):
    """No deployment record for the network: deploy the contracts first (``make deploy``)."""
