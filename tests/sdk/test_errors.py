"""The exception tree: what callers catch, and how a revert reads."""

from __future__ import annotations

import pickle

import pytest

from fedmarket import errors
from fedmarket.errors import (
    BlobNotFoundError,
    ChainError,
    CodecError,
    ContractRevert,
    FedmarketError,
    InvalidCIDError,
    SpecError,
    StoreError,
    TransactionFailed,
)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_fedmarket_error(name):
    assert issubclass(getattr(errors, name), FedmarketError)


@pytest.mark.parametrize("error", [InvalidCIDError, SpecError, errors.ModelBuildError, CodecError])
def test_bad_input_errors_are_value_errors(error):
    assert issubclass(error, ValueError)


@pytest.mark.parametrize(
    ("error", "branch"),
    [
        (errors.BlobNotFoundError, StoreError),
        (errors.CorruptBlobError, StoreError),
        (errors.BlobTooLargeError, StoreError),
        (errors.StoreUnavailableError, StoreError),
        (errors.UpdateMismatchError, CodecError),
        (errors.NonFiniteUpdateError, CodecError),
        (ContractRevert, ChainError),
        (TransactionFailed, ChainError),
        (errors.ChainUnavailableError, ChainError),
        (errors.DeploymentNotFoundError, ChainError),
    ],
)
def test_error_sits_on_its_branch(error, branch):
    assert issubclass(error, branch)


def test_every_error_is_drawn_in_the_module_docstring():
    for name in errors.__all__:
        assert name in errors.__doc__


def test_contract_revert_reads_like_solidity_error():
    revert = ContractRevert("TaskMarketWrongPhase", {"taskId": 1, "phase": 2}, selector="0x12345678")
    assert str(revert) == "TaskMarketWrongPhase(taskId=1, phase=2)"
    assert revert.name == "TaskMarketWrongPhase"
    assert revert.args == {"taskId": 1, "phase": 2}
    assert revert.selector == "0x12345678"


def test_contract_revert_shows_bytes_as_hex():
    revert = ContractRevert("TaskMarketBadHash", {"updateHash": b"\xab\xcd"})
    assert str(revert) == "TaskMarketBadHash(updateHash=0xabcd)"


def test_contract_revert_survives_pickling():
    revert = ContractRevert("TaskMarketWrongPhase", {"taskId": 1, "phase": 2}, selector="0x12345678")
    copy = pickle.loads(pickle.dumps(revert))
    assert (copy.name, copy.args, copy.selector, str(copy)) == (
        revert.name,
        revert.args,
        revert.selector,
        str(revert),
    )


def test_contract_revert_is_raised_and_caught_as_chain_error():
    with pytest.raises(ChainError, match=r"TaskMarketNotCoordinator\(caller=0xabc\)"):
        raise ContractRevert("TaskMarketNotCoordinator", {"caller": "0xabc"})


def test_transaction_failed_names_the_transaction():
    assert "0xfeed" in str(TransactionFailed("reverted without a reason", tx_hash="0xfeed"))


def test_chain_unavailable_names_the_endpoint_the_cause_and_what_to_do():
    error = errors.ChainUnavailableError(
        endpoint="http://127.0.0.1:8545", reason="[Errno 111] Connection refused", doing="reading getTask"
    )
    assert (error.endpoint, error.reason, error.doing) == (
        "http://127.0.0.1:8545",
        "[Errno 111] Connection refused",
        "reading getTask",
    )
    message = str(error)
    assert message.startswith("cannot reach the chain at http://127.0.0.1:8545 while reading getTask (")
    assert "Connection refused" in message and "is the node running? check FEDMARKET_RPC_URL" in message


def test_blob_not_found_says_what_to_do():
    message = str(BlobNotFoundError("bafkreiexample", where="MemoryStore"))
    assert "bafkreiexample" in message and "upload" in message


def test_spec_error_lists_every_problem():
    error = SpecError("a", "too small", problems=[("a", "too small"), ("b.c", "missing")])
    assert (error.field, error.reason) == ("a", "too small")
    assert "a: too small" in str(error) and "b.c: missing" in str(error)
