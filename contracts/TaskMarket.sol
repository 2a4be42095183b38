// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {ITaskMarket} from "./ITaskMarket.sol";

/**
 * @title TaskMarket
 * @notice Reward pools, stakes, commit/reveal rounds, settlement, slashing and claims for
 * federated-learning tasks. See {ITaskMarket} for the protocol.
 * @dev Pausing (by the contract owner) stops new tasks, joins, new rounds, commits and settlement.
 * Reveals stay open, so that no trainer is slashed for a pause, and so does every way for money
 * to leave (claim, leave, withdrawStake, cancelTask).
 *
 * Storage is packed for the gas targets in docs/protocol.md: {commit} and {reveal} touch one slot of
 * task state, one round slot, one trainer slot and one commitment slot each.
 */
contract TaskMarket is ITaskMarket, EIP712, Nonces, Ownable, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Denominator of `slashBps`: basis points.
    uint256 private constant BPS = 10_000;

    /// @dev Placeholder written to a trainer's commitment slot at join, so that every commit is a
    /// non-zero to non-zero store (5,000 gas) rather than a fresh one (22,100): keeps commit
    /// under the 60k gas target. Never a valid commitment (a keccak256 output of 1 is infeasible).
    bytes32 private constant EMPTY_COMMITMENT = bytes32(uint256(1));

    bytes32 private constant TASK_TERMS_TYPEHASH = keccak256(
        "TaskTerms(bytes32 specHash,address coordinator,uint16 rounds,uint16 minTrainers,uint16 maxTrainers,"
        "uint16 slashBps,uint32 commitWindow,uint32 revealWindow,uint256 rewardPool,uint256 minStake)"
    );
    bytes32 private constant CREATE_TASK_TYPEHASH = keccak256(
        "CreateTask(TaskTerms terms,address owner,uint256 nonce,uint256 deadline)"
        "TaskTerms(bytes32 specHash,address coordinator,uint16 rounds,uint16 minTrainers,uint16 maxTrainers,"
        "uint16 slashBps,uint32 commitWindow,uint32 revealWindow,uint256 rewardPool,uint256 minStake)"
    );

    IERC20 private immutable _token;
    uint256 private immutable _settlementGrace;

    uint256 private _taskCount;
    mapping(uint256 taskId => TaskTerms) private _terms;
    mapping(uint256 taskId => TaskState) private _state;
    mapping(uint256 taskId => mapping(uint16 round => Round)) private _rounds;
    mapping(uint256 taskId => mapping(address trainer => Trainer)) private _trainers;
    /// @dev The trainer's commitment for its `lastCommitRound` (EMPTY_COMMITMENT before its first).
    mapping(uint256 taskId => mapping(address trainer => bytes32)) private _commitments;

    /**
     * @param token_ the reward and stake token (an ERC-20 with EIP-2612 permit for {createTaskFor}).
     * @param settlementGrace_ seconds after a reveal deadline reserved to the coordinator's
     * settlement before anyone may {abortRound}.
     * @param admin may pause and unpause.
     */
    constructor(IERC20 token_, uint256 settlementGrace_, address admin) EIP712("TaskMarket", "1") Ownable(admin) {
        _token = token_;
        _settlementGrace = settlementGrace_;
    }

    // ---------------------------------------------------------------- tasks

    /// @inheritdoc ITaskMarket
    function createTask(TaskTerms calldata terms) external whenNotPaused nonReentrant returns (uint256 taskId) {
        taskId = _createTask(terms, msg.sender);
        _token.safeTransferFrom(msg.sender, address(this), terms.rewardPool);
    }

    /// @inheritdoc ITaskMarket
    function createTaskFor(
        TaskTerms calldata terms,
        address owner,
        uint256 deadline,
        bytes calldata ownerSignature,
        Permit calldata permit
    ) external whenNotPaused nonReentrant returns (uint256 taskId) {
        if (block.timestamp > deadline) revert TaskMarketSignatureExpired(deadline);
        bytes32 digest = _hashCreateTask(terms, owner, _useNonce(owner), deadline);
        if (!SignatureChecker.isValidSignatureNow(owner, digest, ownerSignature)) {
            revert TaskMarketInvalidSignature(owner);
        }
        taskId = _createTask(terms, owner);
        // A permit already used by a front-runner reverts; the allowance it set is what matters.
        try IERC20Permit(address(_token)).permit(
            owner, address(this), permit.value, permit.deadline, permit.v, permit.r, permit.s
        ) {} catch {}
        _token.safeTransferFrom(owner, address(this), terms.rewardPool);
    }

    /// @inheritdoc ITaskMarket
    function cancelTask(uint256 taskId) external nonReentrant {
        TaskState storage state = _openTask(taskId);
        if (msg.sender != state.owner) revert TaskMarketNotTaskOwner(taskId, msg.sender);
        if (state.currentRound != 0) revert TaskMarketTaskStarted(taskId);
        uint256 refund = state.pool;
        state.pool = 0;
        state.status = TaskStatus.Cancelled;
        emit TaskCancelled(taskId, refund);
        _token.safeTransfer(state.owner, refund);
    }

    /// @inheritdoc ITaskMarket
    function expireTask(uint256 taskId) external nonReentrant {
        TaskState storage state = _openTask(taskId);
        uint16 roundNo = state.currentRound;
        if (roundNo == 0) revert TaskMarketWrongPhase(taskId, RoundPhase.None); // the owner may cancel instead
        Round storage round = _rounds[taskId][roundNo];
        if (!round.closed) revert TaskMarketWrongPhase(taskId, _phase(state, round));
        uint256 expiresAt = uint256(round.revealDeadline) + _settlementGrace;
        if (block.timestamp < expiresAt) revert TaskMarketNotExpired(taskId, expiresAt);

        uint256 refund = state.pool;
        state.pool = 0;
        state.status = TaskStatus.Expired;
        emit TaskExpired(taskId, refund);
        if (refund != 0) _token.safeTransfer(state.owner, refund);
    }

    // ---------------------------------------------------------------- trainers

    /// @inheritdoc ITaskMarket
    function join(uint256 taskId) external whenNotPaused nonReentrant {
        TaskState storage state = _openTask(taskId);
        TaskTerms storage terms = _terms[taskId];
        Trainer storage trainer = _trainers[taskId][msg.sender];
        if (trainer.joined) revert TaskMarketAlreadyJoined(taskId, msg.sender);
        if (state.trainerCount >= terms.maxTrainers) revert TaskMarketTaskFull(taskId, terms.maxTrainers);

        uint256 stake = terms.minStake;
        trainer.stake = (trainer.stake + stake).toUint96();
        trainer.joined = true;
        state.trainerCount += 1;
        if (_commitments[taskId][msg.sender] == bytes32(0)) _commitments[taskId][msg.sender] = EMPTY_COMMITMENT;
        emit TrainerJoined(taskId, msg.sender, stake);
        _token.safeTransferFrom(msg.sender, address(this), stake);
    }

    /// @inheritdoc ITaskMarket
    function leave(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        Trainer storage trainer = _trainers[taskId][msg.sender];
        if (!trainer.joined) revert TaskMarketNotJoined(taskId, msg.sender);
        uint16 roundNo = state.currentRound;
        if (trainer.lastCommitRound == roundNo && roundNo != 0 && !_rounds[taskId][roundNo].closed) {
            revert TaskMarketOpenCommitment(taskId, msg.sender, roundNo);
        }
        uint256 stake = trainer.stake;
        trainer.stake = 0;
        trainer.joined = false;
        state.trainerCount -= 1;
        if (roundNo != 0) _closeCommitPhaseIfComplete(state, _rounds[taskId][roundNo], _terms[taskId]);
        emit TrainerLeft(taskId, msg.sender, stake);
        _token.safeTransfer(msg.sender, stake);
    }

    /// @inheritdoc ITaskMarket
    function withdrawStake(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        Trainer storage trainer = _trainers[taskId][msg.sender];
        if (trainer.joined) {
            if (state.status == TaskStatus.Open) revert TaskMarketStillJoined(taskId, msg.sender);
            trainer.joined = false;
            state.trainerCount -= 1;
        }
        uint256 amount = trainer.stake;
        if (amount == 0) revert TaskMarketNothingToWithdraw(taskId, msg.sender);
        trainer.stake = 0;
        emit StakeWithdrawn(taskId, msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- rounds

    /// @inheritdoc ITaskMarket
    function startRound(uint256 taskId, bytes32 modelHash) external whenNotPaused {
        TaskState storage state = _openTask(taskId);
        TaskTerms storage terms = _terms[taskId];
        if (msg.sender != terms.coordinator) revert TaskMarketNotCoordinator(taskId, msg.sender);
        uint16 previous = state.currentRound;
        if (previous != 0 && !_rounds[taskId][previous].closed) {
            revert TaskMarketWrongPhase(taskId, _phase(state, _rounds[taskId][previous]));
        }
        if (state.trainerCount < terms.minTrainers) {
            revert TaskMarketNotEnoughTrainers(taskId, state.trainerCount, terms.minTrainers);
        }

        uint16 roundNo = previous + 1;
        uint64 commitDeadline = uint64(block.timestamp) + terms.commitWindow;
        uint64 revealDeadline = commitDeadline + terms.revealWindow;
        state.currentRound = roundNo;
        state.modelHash = modelHash;
        Round storage round = _rounds[taskId][roundNo];
        round.commitDeadline = commitDeadline;
        round.revealDeadline = revealDeadline;
        round.modelHash = modelHash;
        emit RoundStarted(taskId, roundNo, modelHash, commitDeadline, revealDeadline);
    }

    /// @inheritdoc ITaskMarket
    function commit(uint256 taskId, bytes32 commitment) external whenNotPaused {
        TaskState storage state = _existingTask(taskId);
        uint16 roundNo = state.currentRound;
        Round storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Commit) revert TaskMarketWrongPhase(taskId, phase);
        Trainer storage trainer = _trainers[taskId][msg.sender];
        if (!trainer.joined) revert TaskMarketNotJoined(taskId, msg.sender);
        if (trainer.lastCommitRound == roundNo) revert TaskMarketAlreadyCommitted(taskId, msg.sender, roundNo);

        trainer.lastCommitRound = roundNo;
        _commitments[taskId][msg.sender] = commitment;
        round.commitCount += 1;
        _closeCommitPhaseIfComplete(state, round, _terms[taskId]);
        emit Committed(taskId, roundNo, msg.sender, commitment);
    }

    /// @inheritdoc ITaskMarket
    function reveal(uint256 taskId, bytes32 updateHash, bytes32 salt) external {
        TaskState storage state = _existingTask(taskId);
        uint16 roundNo = state.currentRound;
        Round storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Reveal) revert TaskMarketWrongPhase(taskId, phase);
        Trainer storage trainer = _trainers[taskId][msg.sender];
        if (trainer.lastCommitRound != roundNo) revert TaskMarketNotCommitted(taskId, msg.sender, roundNo);
        if (trainer.lastRevealRound == roundNo) revert TaskMarketAlreadyRevealed(taskId, msg.sender, roundNo);
        bytes32 expected = keccak256(abi.encode(taskId, roundNo, msg.sender, updateHash, salt));
        if (_commitments[taskId][msg.sender] != expected) revert TaskMarketCommitmentMismatch(taskId, msg.sender);

        trainer.lastRevealRound = roundNo;
        uint16 revealCount = round.revealCount + 1;
        round.revealCount = revealCount;
        // The last committer to reveal closes the phase; the settlement grace period starts now.
        if (revealCount == round.commitCount) round.revealDeadline = uint64(block.timestamp);
        emit Revealed(taskId, roundNo, msg.sender, updateHash);
    }

    /// @inheritdoc ITaskMarket
    function finalizeRound(
        uint256 taskId,
        bytes32 newModelHash,
        bytes32 rewardsRoot,
        uint256 roundPayout,
        bytes32 reportHash,
        address[] calldata rejected
    ) external whenNotPaused nonReentrant {
        TaskState storage state = _openTask(taskId);
        TaskTerms storage terms = _terms[taskId];
        if (msg.sender != terms.coordinator) revert TaskMarketNotCoordinator(taskId, msg.sender);
        Round storage round = _settlingRound(taskId, state);
        if (round.revealCount < terms.minTrainers) {
            revert TaskMarketQuorumNotReached(taskId, round.revealCount, terms.minTrainers);
        }

        uint256 slashed = _slashCommitters(taskId, state, round, rejected, false);
        _allocate(taskId, state, terms, slashed, roundPayout);
        state.modelHash = newModelHash;
        state.rewardsRoot = rewardsRoot;
        round.closed = true;
        round.reportHash = reportHash;
        round.payout = roundPayout.toUint96();
        emit RoundFinalized(
            taskId, state.currentRound, newModelHash, rewardsRoot, roundPayout, reportHash, uint16(rejected.length)
        );
        _completeIfLastRound(taskId, state, terms);
    }

    /// @inheritdoc ITaskMarket
    function abortRound(uint256 taskId, address[] calldata nonRevealers) external whenNotPaused nonReentrant {
        TaskState storage state = _openTask(taskId);
        TaskTerms storage terms = _terms[taskId];
        Round storage round = _settlingRound(taskId, state);
        uint256 allowedAt = uint256(round.revealDeadline) + _settlementGrace;
        if (round.revealCount >= terms.minTrainers && block.timestamp < allowedAt) {
            revert TaskMarketAbortNotAllowed(taskId, allowedAt);
        }

        uint256 slashed = _slashCommitters(taskId, state, round, nonRevealers, true);
        state.pool = (state.pool + slashed).toUint96();
        round.closed = true;
        round.aborted = true;
        emit RoundAborted(taskId, state.currentRound, uint16(nonRevealers.length));
        _completeIfLastRound(taskId, state, terms);
    }

    // ---------------------------------------------------------------- rewards

    /// @inheritdoc ITaskMarket
    function claim(uint256 taskId, uint256 cumulativeAmount, bytes32[] calldata proof) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(msg.sender, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, state.rewardsRoot, leaf)) {
            revert TaskMarketInvalidProof(taskId, msg.sender, cumulativeAmount);
        }
        Trainer storage trainer = _trainers[taskId][msg.sender];
        uint256 claimed = trainer.claimed;
        if (cumulativeAmount <= claimed) revert TaskMarketNothingToClaim(taskId, msg.sender);
        // Cannot underflow: checked just above.
        uint256 amount;
        unchecked {
            amount = cumulativeAmount - claimed;
        }
        uint256 unclaimed = state.unclaimed;
        if (amount > unclaimed) revert TaskMarketClaimExceedsAllocation(taskId, amount, unclaimed);

        trainer.claimed = cumulativeAmount.toUint96();
        // Cannot underflow: amount <= unclaimed checked just above.
        unchecked {
            state.unclaimed = uint96(unclaimed - amount);
        }
        emit RewardsClaimed(taskId, msg.sender, amount, cumulativeAmount);
        _token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- admin

    /// @notice Stops new tasks, joins and round progress. Exits stay open.
    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc ITaskMarket
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc ITaskMarket
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @inheritdoc ITaskMarket
    function settlementGrace() external view returns (uint256) {
        return _settlementGrace;
    }

    /// @inheritdoc ITaskMarket
    function getTask(uint256 taskId) external view returns (TaskTerms memory terms, TaskState memory state) {
        _existingTask(taskId);
        return (_terms[taskId], _state[taskId]);
    }

    /// @inheritdoc ITaskMarket
    function getRound(uint256 taskId, uint16 round) external view returns (Round memory) {
        _existingTask(taskId);
        return _rounds[taskId][round];
    }

    /// @inheritdoc ITaskMarket
    function roundPhase(uint256 taskId) external view returns (RoundPhase) {
        TaskState storage state = _existingTask(taskId);
        return _phase(state, _rounds[taskId][state.currentRound]);
    }

    /// @inheritdoc ITaskMarket
    function getTrainer(uint256 taskId, address trainer) external view returns (Trainer memory) {
        return _trainers[taskId][trainer];
    }

    /// @inheritdoc ITaskMarket
    function getCommitment(uint256 taskId, address trainer)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed)
    {
        Trainer storage t = _trainers[taskId][trainer];
        round = t.lastCommitRound;
        if (round == 0) return (0, bytes32(0), false);
        return (round, _commitments[taskId][trainer], t.lastRevealRound == round);
    }

    /// @inheritdoc ITaskMarket
    function claimedOf(uint256 taskId, address account) external view returns (uint256) {
        return _trainers[taskId][account].claimed;
    }

    /// @inheritdoc ITaskMarket
    function roundBudget(uint256 taskId) external view returns (uint256) {
        TaskState storage state = _existingTask(taskId);
        if (state.status != TaskStatus.Open) return 0;
        return state.pool / _roundsLeft(taskId, state, _terms[taskId]);
    }

    /// @inheritdoc ITaskMarket
    function hashTaskTerms(TaskTerms calldata terms, address owner, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashCreateTask(terms, owner, nonce, deadline);
    }

    /// @inheritdoc ITaskMarket
    function nonces(address owner) public view override(ITaskMarket, Nonces) returns (uint256) {
        return super.nonces(owner);
    }

    // ---------------------------------------------------------------- internals

    function _createTask(TaskTerms calldata terms, address owner) private returns (uint256 taskId) {
        _validateTerms(terms);
        taskId = ++_taskCount;
        _terms[taskId] = terms;
        TaskState storage state = _state[taskId];
        state.owner = owner;
        state.status = TaskStatus.Open;
        state.pool = terms.rewardPool.toUint96();
        emit TaskCreated(taskId, owner, terms.coordinator, terms);
    }

    function _validateTerms(TaskTerms calldata terms) private pure {
        if (terms.coordinator == address(0)) revert TaskMarketInvalidTerms("coordinator");
        if (terms.rounds == 0) revert TaskMarketInvalidTerms("rounds");
        if (terms.minTrainers == 0) revert TaskMarketInvalidTerms("minTrainers");
        if (terms.maxTrainers < terms.minTrainers) revert TaskMarketInvalidTerms("maxTrainers");
        if (terms.slashBps > BPS) revert TaskMarketInvalidTerms("slashBps");
        if (terms.commitWindow == 0) revert TaskMarketInvalidTerms("commitWindow");
        if (terms.revealWindow == 0) revert TaskMarketInvalidTerms("revealWindow");
        if (terms.rewardPool == 0 || terms.rewardPool > type(uint96).max) revert TaskMarketInvalidTerms("rewardPool");
        if (terms.minStake == 0 || terms.minStake > type(uint96).max) revert TaskMarketInvalidTerms("minStake");
    }

    function _hashCreateTask(TaskTerms calldata terms, address owner, uint256 nonce, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        bytes32 termsHash = keccak256(abi.encode(TASK_TERMS_TYPEHASH, terms));
        return _hashTypedDataV4(keccak256(abi.encode(CREATE_TASK_TYPEHASH, termsHash, owner, nonce, deadline)));
    }

    function _existingTask(uint256 taskId) private view returns (TaskState storage state) {
        state = _state[taskId];
        if (state.status == TaskStatus.None) revert TaskMarketUnknownTask(taskId);
    }

    function _openTask(uint256 taskId) private view returns (TaskState storage state) {
        state = _existingTask(taskId);
        if (state.status != TaskStatus.Open) revert TaskMarketTaskNotOpen(taskId, state.status);
    }

    function _phase(TaskState storage state, Round storage round) private view returns (RoundPhase) {
        if (state.currentRound == 0) return RoundPhase.None;
        if (round.closed) return round.aborted ? RoundPhase.Aborted : RoundPhase.Finalized;
        if (block.timestamp < round.commitDeadline && round.commitCount < state.trainerCount) {
            return RoundPhase.Commit;
        }
        if (block.timestamp < round.revealDeadline && round.revealCount < round.commitCount) {
            return RoundPhase.Reveal;
        }
        return RoundPhase.Settling;
    }

    /// @dev Opens the reveal phase early once every joined trainer committed, so that a later
    /// join cannot reopen the commit phase.
    function _closeCommitPhaseIfComplete(TaskState storage state, Round storage round, TaskTerms storage terms)
        private
    {
        if (round.closed || round.commitCount < state.trainerCount) return;
        uint64 now_ = uint64(block.timestamp);
        if (now_ >= round.commitDeadline) return;
        round.commitDeadline = now_;
        round.revealDeadline = now_ + terms.revealWindow;
    }

    /// @dev Rounds not yet closed, the current one included when it is open.
    function _roundsLeft(uint256 taskId, TaskState storage state, TaskTerms storage terms)
        private
        view
        returns (uint256)
    {
        uint16 current = state.currentRound;
        bool currentOpen = current != 0 && !_rounds[taskId][current].closed;
        return terms.rounds - current + (currentOpen ? 1 : 0);
    }

    /// @dev The current round, which must be in its Settling phase.
    function _settlingRound(uint256 taskId, TaskState storage state) private view returns (Round storage round) {
        round = _rounds[taskId][state.currentRound];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Settling) revert TaskMarketWrongPhase(taskId, phase);
    }

    /**
     * @dev Slashes and removes each listed committer of the current round and returns the tokens
     * slashed. The list must hold every committer that did not reveal; with `onlyNonRevealers`,
     * nobody else.
     */
    function _slashCommitters(
        uint256 taskId,
        TaskState storage state,
        Round storage round,
        address[] calldata accounts,
        bool onlyNonRevealers
    ) private returns (uint256 slashed) {
        uint16 roundNo = state.currentRound;
        uint16 nonRevealers;
        for (uint256 i = 0; i < accounts.length; ++i) {
            (uint256 amount, bool revealed) = _slashTrainer(taskId, roundNo, accounts[i], onlyNonRevealers);
            slashed += amount;
            if (!revealed) ++nonRevealers;
        }
        // Each listed account was joined (checked in _slashTrainer), so this cannot underflow.
        state.trainerCount -= uint16(accounts.length);
        // Cannot underflow: every reveal follows a commit in the same round.
        uint16 expected = round.commitCount - round.revealCount;
        if (nonRevealers != expected) revert TaskMarketNonRevealersMismatch(taskId, nonRevealers, expected);
    }

    /// @dev Cuts a committer's stake by `slashBps` and removes it from the task.
    function _slashTrainer(uint256 taskId, uint16 roundNo, address account, bool onlyNonRevealers)
        private
        returns (uint256 amount, bool revealed)
    {
        Trainer storage trainer = _trainers[taskId][account];
        if (trainer.lastCommitRound != roundNo) revert TaskMarketNotCommitted(taskId, account, roundNo);
        if (!trainer.joined) revert TaskMarketAlreadyRejected(taskId, account);
        revealed = trainer.lastRevealRound == roundNo;
        if (revealed && onlyNonRevealers) revert TaskMarketRevealed(taskId, account);

        uint256 stake = trainer.stake;
        amount = stake * _terms[taskId].slashBps / BPS;
        // Cannot truncate: amount <= stake, which fits in uint96.
        trainer.stake = uint96(stake - amount);
        trainer.joined = false;
        emit TrainerSlashed(taskId, roundNo, account, amount);
    }

    /// @dev Adds this round's slashes to the pool, then moves `payout` (at most the round budget)
    /// from the pool to the claimable rewards.
    function _allocate(uint256 taskId, TaskState storage state, TaskTerms storage terms, uint256 slashed, uint256 payout)
        private
    {
        uint256 pool = state.pool + slashed;
        uint256 budget = pool / _roundsLeft(taskId, state, terms);
        if (payout > budget) revert TaskMarketPayoutExceedsBudget(taskId, payout, budget);
        state.pool = (pool - payout).toUint96();
        state.unclaimed = (state.unclaimed + payout).toUint96();
    }

    function _completeIfLastRound(uint256 taskId, TaskState storage state, TaskTerms storage terms) private {
        if (state.currentRound != terms.rounds) return;
        uint256 refund = state.pool;
        state.pool = 0;
        state.status = TaskStatus.Completed;
        emit TaskCompleted(taskId, refund);
        if (refund != 0) _token.safeTransfer(state.owner, refund);
    }
}
