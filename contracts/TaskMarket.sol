// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {ITaskMarket} from "./ITaskMarket.sol";

/**
 * @title TaskMarketStorage
 * @notice The state of a {TaskMarket} and what both of its contracts need to read it.
 * @dev {TaskMarket} delegates settlement to {TaskMarketSettlement} (one contract would exceed the
 * 24 KiB code size limit). Both inherit this contract first, so that its state variables take the
 * same slots in both; neither declares state of its own. Terms and rounds are stored in their own
 * layouts ({StoredTerms}, {StoredRound}); the views return the interface's structs.
 */
abstract contract TaskMarketStorage {
    /// @notice Most trainers a task may admit (`maxTrainers`): bounds the cost of {TaskMarket-finalizeRound}.
    uint16 public constant MAX_TRAINERS = 256;
    /// @notice Most validators a task may admit (`maxValidators`): bounds the cost of {TaskMarket-finalizeRound}.
    uint16 public constant MAX_VALIDATORS = 16;
    /// @notice A score entry lies within +-MAX_SCORE unless it is a flag.
    int256 public constant MAX_SCORE = int256(uint256(type(uint128).max));
    /// @notice A validator whose agreement with consensus is below this earns nothing that round.
    uint256 public constant MIN_AGREEMENT = 5e17;
    /// @notice Flag: the validator could not fetch the update, or it did not match its hash.
    int256 public constant SCORE_UNAVAILABLE = type(int256).min;
    /// @notice Flag: the update does not decode or does not fit the task's model.
    int256 public constant SCORE_INVALID = type(int256).min + 1;
    /// @notice Flag: the update makes the model worse beyond the task's harm threshold.
    int256 public constant SCORE_HARMFUL = type(int256).min + 2;
    /// @notice Where slashed stake goes: burned, so that nobody profits from causing a slash.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice Longest phase window a task may set (each of the four): a round cannot hold stakes
    /// and seats for longer than 4 * MAX_WINDOW before it can be settled.
    uint32 public constant MAX_WINDOW = 7 days;

    /// @dev Denominator of `slashBps` and `validatorShareBps`: basis points.
    uint256 internal constant BPS = 10_000;

    /// @dev {ITaskMarket-TaskTerms} in 4 slots instead of 7 (every amount fits in uint96, see
    /// TaskMarket._validateTerms), grouped so that each call reads as few slots as it can.
    struct StoredTerms {
        bytes32 specHash;
        address coordinator;
        uint16 rounds;
        uint16 minTrainers;
        uint16 maxTrainers;
        uint16 slashBps;
        uint32 commitWindow;
        // slot 2: startRound, join, settlement
        uint32 revealWindow;
        uint32 scoreWindow;
        uint32 scoreRevealWindow;
        uint16 minValidators;
        uint16 maxValidators;
        uint16 validatorShareBps;
        uint96 minStake;
        // slot 3
        uint96 rewardPool;
        uint96 minValidatorStake;
    }

    /// @dev An {ITaskMarket-Round} as stored. The first slot holds everything the phase clock and
    /// the counters need, so that commits and reveals touch one round slot. Deadlines are kept as
    /// the commit deadline and the length of each later phase: an early close rewrites one field and
    /// the later deadlines follow it back to back, without reading the terms.
    struct StoredRound {
        uint40 commitDeadline;
        uint32 revealLength; // revealDeadline - commitDeadline
        uint32 scoreCommitLength; // scoreCommitDeadline - revealDeadline
        uint32 scoreRevealLength; // scoreRevealDeadline - scoreCommitDeadline
        uint16 commitCount;
        uint16 revealCount;
        uint16 scoreCommitCount;
        uint16 scoreRevealCount;
        bool closed;
        bool aborted;
        bool modelPublished;
        // Trainers bound to this round (joined before it started) that neither committed nor left
        // yet: they lose their seat and are charged when it closes, without being listed.
        uint16 uncommitted;
        uint64 closedAt;
        uint96 payout;
        bytes32 modelHash;
        bytes32 newModelHash;
        bytes32 reportHash;
    }

    /// @dev A trainer as stored: {ITaskMarket-Trainer} and what keeps its seat honest, in one slot.
    struct StoredTrainer {
        uint96 stake;
        uint96 claimable;
        uint16 lastCommitRound;
        uint16 lastRevealRound;
        bool joined;
        // The first round it must commit in (the one after the round current at its join): missing
        // a round it is bound to costs its seat and a charge, see {_seatLost}.
        uint16 firstRound;
        // Left during a pause with a commitment in round `lastCommitRound`: the share a slash could
        // take stays at stake until that round closes.
        bool leaving;
    }

    /// @dev A validator as stored: {ITaskMarket-Validator} with the same `leaving` mark.
    struct StoredValidator {
        uint96 stake;
        uint96 claimable;
        uint16 lastScoreCommitRound;
        uint16 lastScoreRevealRound;
        bool joined;
        bool leaving;
        bytes32 dataHash;
    }

    IERC20 internal immutable _token;

    uint256 internal _taskCount;
    mapping(uint256 taskId => StoredTerms) internal _terms;
    mapping(uint256 taskId => ITaskMarket.TaskState) internal _state;
    mapping(uint256 taskId => mapping(uint16 round => StoredRound)) internal _rounds;
    mapping(uint256 taskId => mapping(address trainer => StoredTrainer)) internal _trainers;
    /// @dev The trainer's commitment for its `lastCommitRound` (EMPTY_COMMITMENT before its first).
    mapping(uint256 taskId => mapping(address trainer => bytes32)) internal _commitments;
    mapping(uint256 taskId => mapping(address validator => StoredValidator)) internal _validators;
    /// @dev The validator's score commitment for its `lastScoreCommitRound`, replaced by
    /// `keccak256(abi.encode(scores))` once revealed (EMPTY_COMMITMENT before its first).
    mapping(uint256 taskId => mapping(address validator => bytes32)) internal _scoreCommitments;
    /// @dev When the market was last unpaused: the coordinator gets a whole settlement grace from
    /// then before anyone else may abort a round or expire a task.
    uint64 internal _unpausedAt;

    constructor(IERC20 token_) {
        _token = token_;
    }

    /// @dev The latest closed round of the task (0 before any closed).
    function _lastClosedRound(uint256 taskId, ITaskMarket.TaskState storage state) internal view returns (uint16) {
        uint16 current = state.currentRound;
        return current == 0 || _rounds[taskId][current].closed ? current : current - 1;
    }

    /// @dev Whether a trainer stored as joined lost its seat: it did not commit in a closed round it
    /// was bound to. Commits follow each other round by round, so checking the latest closed round
    /// is enough; the closing settlement freed the seat and burned {_seatCharge} already.
    function _seatLost(StoredTrainer storage trainer, uint16 lastClosed) internal view returns (bool) {
        return trainer.joined && trainer.firstRound <= lastClosed && trainer.lastCommitRound < lastClosed;
    }

    /// @dev What a lost seat costs: `slashBps` of the stake a join takes (every seated trainer holds
    /// at least that much), so that a settlement can burn it for trainers it never lists.
    function _seatCharge(StoredTerms storage terms) internal view returns (uint256) {
        return uint256(terms.minStake) * terms.slashBps / BPS;
    }

    function _existingTask(uint256 taskId) internal view returns (ITaskMarket.TaskState storage state) {
        state = _state[taskId];
        if (state.status == ITaskMarket.TaskStatus.None) revert ITaskMarket.TaskMarketUnknownTask(taskId);
    }

    function _openTask(uint256 taskId) internal view returns (ITaskMarket.TaskState storage state) {
        state = _existingTask(taskId);
        if (state.status != ITaskMarket.TaskStatus.Open) {
            revert ITaskMarket.TaskMarketTaskNotOpen(taskId, state.status);
        }
    }

    function _phase(ITaskMarket.TaskState storage state, StoredRound storage round)
        internal
        view
        returns (ITaskMarket.RoundPhase)
    {
        if (state.currentRound == 0) return ITaskMarket.RoundPhase.None;
        if (round.closed) return round.aborted ? ITaskMarket.RoundPhase.Aborted : ITaskMarket.RoundPhase.Finalized;
        uint256 deadline = round.commitDeadline;
        if (block.timestamp < deadline && round.commitCount < state.trainerCount) return ITaskMarket.RoundPhase.Commit;
        deadline += round.revealLength;
        if (block.timestamp < deadline && round.revealCount < round.commitCount) return ITaskMarket.RoundPhase.Reveal;
        deadline += round.scoreCommitLength;
        if (block.timestamp < deadline && round.scoreCommitCount < state.validatorCount) {
            return ITaskMarket.RoundPhase.ScoreCommit;
        }
        deadline += round.scoreRevealLength;
        if (block.timestamp < deadline && round.scoreRevealCount < round.scoreCommitCount) {
            return ITaskMarket.RoundPhase.ScoreReveal;
        }
        return ITaskMarket.RoundPhase.Settling;
    }

    /// @dev keccak256(abi.encode(scores)), built in scratch memory past the free memory pointer
    /// (left where it is): settling hashes up to MAX_VALIDATORS vectors without growing memory.
    function _hashScores(int256[] calldata scores) internal pure returns (bytes32 hash) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := shl(5, scores.length)
            mstore(ptr, 0x20)
            mstore(add(ptr, 0x20), scores.length)
            calldatacopy(add(ptr, 0x40), scores.offset, size)
            hash := keccak256(ptr, add(size, 0x40))
        }
    }

    /// @dev Rounds not yet closed, the current one included when it is open.
    function _roundsLeft(uint256 taskId, ITaskMarket.TaskState storage state, StoredTerms storage terms)
        internal
        view
        returns (uint256)
    {
        uint16 current = state.currentRound;
        bool currentOpen = current != 0 && !_rounds[taskId][current].closed;
        return terms.rounds - current + (currentOpen ? 1 : 0);
    }
}

/**
 * @title TaskMarketSettlement
 * @notice The settlement half of a {TaskMarket}: {finalizeRound} (the round's consensus, payouts
 * and slashes) and {abortRound}. Deployed by the market's constructor and only ever run through
 * the market's delegatecall, in the market's storage, behind its pause and re-entrancy guards.
 * @dev Called directly, it sees its own storage, which holds no task: every call reverts
 * {ITaskMarket-TaskMarketUnknownTask}.
 */
contract TaskMarketSettlement is TaskMarketStorage {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Fixed point of normalized scores, consensus values and agreements.
    uint256 private constant SCALE = 1e18;

    /// @dev Settlement marks for flagged entries in the normalized matrix (a normalized score is at
    /// most SCALE, far below both): the median and the agreement then need no calldata.
    uint256 private constant MARK_UNAVAILABLE = 1 << 255;
    uint256 private constant MARK_FLAGGED = 1 << 254; // INVALID or HARMFUL

    /// @dev One round's score matrix as the consensus reads it (indexes follow the settlement lists).
    struct Votes {
        uint256 trainers; // n, the row length
        uint256[] entries; // row v: validator v's normalized entries, or a MARK_* for a flag
        uint256[] stakes; // w[v]
        uint256[] own; // own[v]: index of validator v among the trainers, n if it is none of them
        uint256[] sorted; // scratch for one trainer's median: (entry << 128) | weight, ascending
    }

    /// @dev What consensus made of a round.
    struct Tally {
        ITaskMarket.Outcome[] outcomes; // per trainer
        uint256[] values; // c[i]
        uint256[] agreements; // a[v]
        uint256 totalValue; // sum of c[i]
        uint256 eligible; // sum of a[v] over validators at or above MIN_AGREEMENT
    }

    /// @dev The market's settlement grace (immutables live in code, so each contract keeps its own).
    uint256 private immutable _settlementGrace;

    constructor(IERC20 token_, uint256 settlementGrace_) TaskMarketStorage(token_) {
        _settlementGrace = settlementGrace_;
    }

    /// @dev See {ITaskMarket-finalizeRound}.
    function finalizeRound(uint256 taskId, ITaskMarket.Settlement calldata s) external {
        ITaskMarket.TaskState storage state = _openTask(taskId);
        StoredTerms storage terms = _terms[taskId];
        StoredRound storage round = _settlingRound(taskId, state);
        if (round.revealCount < terms.minTrainers) {
            revert ITaskMarket.TaskMarketQuorumNotReached(taskId, round.revealCount, terms.minTrainers);
        }
        if (round.scoreRevealCount < terms.minValidators) {
            revert ITaskMarket.TaskMarketValidatorQuorumNotReached(taskId, round.scoreRevealCount, terms.minValidators);
        }
        // Taken before anything changes (slashes are burned, so they never add to it).
        uint256 budget = state.pool / _roundsLeft(taskId, state, terms);
        uint256 validatorBudget = budget * terms.validatorShareBps / BPS;

        Tally memory tally = _consensus(taskId, state.currentRound, round, s);
        uint256 trainerPayout = _payTrainers(taskId, state.currentRound, s.trainers, tally, budget - validatorBudget);
        uint256 validatorPayout = _payValidators(taskId, state.currentRound, s.validators, tally, validatorBudget);
        uint256 burned;
        {
            // Separate statements: the slash events come in this order, and Solidity does not fix
            // the evaluation order of an expression's operands.
            uint256 slashBps = terms.slashBps;
            burned = _slashRejected(taskId, state, s.trainers, tally.outcomes, slashBps);
            burned += _slashCommitters(taskId, state, round, s.nonRevealers, slashBps);
            burned += _slashSilentValidators(taskId, state, round, s.silentValidators, slashBps);
            burned += _unseatUncommitted(taskId, state, terms, round);
        }

        uint256 payout = trainerPayout + validatorPayout;
        // Cannot underflow or truncate: payout <= budget <= pool.
        state.pool -= uint96(payout);
        state.unclaimed = (state.unclaimed + payout).toUint96();
        round.closed = true;
        round.closedAt = uint64(block.timestamp);
        round.payout = uint96(payout);
        emit ITaskMarket.RoundFinalized(taskId, state.currentRound, trainerPayout, validatorPayout, burned);
        _transferOut(state, _completeIfLastRound(taskId, state, terms), burned);
    }

    /// @dev See {ITaskMarket-abortRound}.
    function abortRound(uint256 taskId, address[] calldata nonRevealers, address[] calldata silentValidators)
        external
    {
        ITaskMarket.TaskState storage state = _openTask(taskId);
        StoredTerms storage terms = _terms[taskId];
        StoredRound storage round = _settlingRound(taskId, state);
        if (round.revealCount >= terms.minTrainers && round.scoreRevealCount >= terms.minValidators) {
            revert ITaskMarket.TaskMarketAbortNotAllowed(taskId);
        }
        // A pause may have kept the coordinator from acting: it gets a whole grace after the unpause.
        uint256 allowedAt = uint256(_unpausedAt) + _settlementGrace;
        if (block.timestamp < allowedAt && msg.sender != terms.coordinator) {
            revert ITaskMarket.TaskMarketAbortTooEarly(taskId, allowedAt);
        }

        uint256 slashBps = terms.slashBps;
        uint256 burned = _slashCommitters(taskId, state, round, nonRevealers, slashBps);
        burned += _slashSilentValidators(taskId, state, round, silentValidators, slashBps);
        burned += _unseatUncommitted(taskId, state, terms, round);
        round.closed = true;
        round.aborted = true;
        round.closedAt = uint64(block.timestamp);
        // Cannot truncate: each list was checked against a uint16 count.
        uint16 slashedCount = uint16(nonRevealers.length + silentValidators.length);
        emit ITaskMarket.RoundAborted(taskId, state.currentRound, slashedCount, burned);
        _transferOut(state, _completeIfLastRound(taskId, state, terms), burned);
    }

    // ---------------------------------------------------------------- internals: closing

    /// @dev The current round, which must be in its Settling phase.
    function _settlingRound(uint256 taskId, ITaskMarket.TaskState storage state)
        private
        view
        returns (StoredRound storage round)
    {
        round = _rounds[taskId][state.currentRound];
        ITaskMarket.RoundPhase phase = _phase(state, round);
        if (phase != ITaskMarket.RoundPhase.Settling) revert ITaskMarket.TaskMarketWrongPhase(taskId, phase);
    }

    /// @dev Ends a task after its last round; returns the pool refunded to the owner (paid by the caller).
    function _completeIfLastRound(uint256 taskId, ITaskMarket.TaskState storage state, StoredTerms storage terms)
        private
        returns (uint256 refund)
    {
        if (state.currentRound != terms.rounds) return 0;
        refund = state.pool;
        state.pool = 0;
        state.status = ITaskMarket.TaskStatus.Completed;
        emit ITaskMarket.TaskCompleted(taskId, refund);
    }

    /// @dev A settlement's interactions, after all its effects: one burn for all its slashes, then the refund.
    function _transferOut(ITaskMarket.TaskState storage state, uint256 refund, uint256 burned) private {
        if (burned != 0) _token.safeTransfer(BURN_ADDRESS, burned);
        if (refund != 0) _token.safeTransfer(state.owner, refund);
    }

    // ---------------------------------------------------------------- internals: consensus

    /// @dev Checks the settlement's revealers and score vectors against the round, then computes its consensus.
    function _consensus(uint256 taskId, uint16 roundNo, StoredRound storage round, ITaskMarket.Settlement calldata s)
        private
        view
        returns (Tally memory)
    {
        _checkRevealers(taskId, roundNo, s.trainers, round.revealCount);
        uint256[] memory stakes = _scoreRevealerStakes(taskId, roundNo, s.validators, s.scores, round.scoreRevealCount);
        return _tally(s.trainers, s.validators, s.scores, stakes);
    }

    /// @dev `trainers` must be every revealer of the round, in strictly ascending order.
    function _checkRevealers(uint256 taskId, uint16 roundNo, address[] calldata trainers, uint16 revealCount)
        private
        view
    {
        address previous = address(0);
        for (uint256 i = 0; i < trainers.length; ++i) {
            address trainer = trainers[i];
            if (trainer <= previous) revert ITaskMarket.TaskMarketUnsorted(taskId, "trainers");
            if (_trainers[taskId][trainer].lastRevealRound != roundNo) {
                revert ITaskMarket.TaskMarketNotARevealer(taskId, trainer);
            }
            previous = trainer;
        }
        // Cannot truncate below: distinct revealers, so at most revealCount of them.
        if (trainers.length != revealCount) {
            revert ITaskMarket.TaskMarketRevealersMismatch(taskId, uint16(trainers.length), revealCount);
        }
    }

    /// @dev `validators` must be every score revealer of the round, in strictly ascending order, each
    /// with the vector it revealed; returns their stakes (the consensus weights).
    function _scoreRevealerStakes(
        uint256 taskId,
        uint16 roundNo,
        address[] calldata validators,
        int256[][] calldata scores,
        uint16 revealCount
    ) private view returns (uint256[] memory stakes) {
        if (scores.length != validators.length) {
            revert ITaskMarket.TaskMarketScoreCountMismatch(taskId, scores.length, validators.length);
        }
        stakes = new uint256[](validators.length);
        address previous = address(0);
        for (uint256 v = 0; v < validators.length; ++v) {
            address account = validators[v];
            if (account <= previous) revert ITaskMarket.TaskMarketUnsorted(taskId, "validators");
            StoredValidator storage validator = _validators[taskId][account];
            // The revealed vector had one in-range entry per revealer; matching its hash proves the same of this one.
            if (
                validator.lastScoreRevealRound != roundNo
                    || _scoreCommitments[taskId][account] != _hashScores(scores[v])
            ) revert ITaskMarket.TaskMarketScoresMismatch(taskId, account);
            stakes[v] = validator.stake;
            previous = account;
        }
        if (validators.length != revealCount) {
            revert ITaskMarket.TaskMarketScoreRevealersMismatch(taskId, uint16(validators.length), revealCount);
        }
    }

    /// @dev The round's consensus, as documented in {ITaskMarket} and mirrored by `fedmarket.consensus`.
    /// Its loops run up to MAX_TRAINERS x MAX_VALIDATORS times, so they skip the checks that cannot
    /// fail: every index is below its array's length by the loop bounds, and every sum is bounded
    /// (stakes fit in uint96, normalized entries and consensus values in SCALE per trainer).
    function _tally(
        address[] calldata trainers,
        address[] calldata validators,
        int256[][] calldata scores,
        uint256[] memory stakes
    ) private pure returns (Tally memory tally) {
        uint256 n = trainers.length;
        uint256 m = validators.length;
        Votes memory votes = Votes({
            trainers: n,
            entries: new uint256[](m * n),
            stakes: stakes,
            own: _ownIndexes(trainers, validators),
            sorted: new uint256[](m)
        });
        _normalize(votes, scores);

        tally.outcomes = new ITaskMarket.Outcome[](n);
        tally.values = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            (ITaskMarket.Outcome outcome, uint256 value) = _judge(votes, i);
            tally.outcomes[i] = outcome;
            tally.values[i] = value;
            tally.totalValue += value;
        }
        tally.agreements = new uint256[](m);
        for (uint256 v = 0; v < m; ++v) {
            uint256 agreement = _agreement(votes, tally, v);
            tally.agreements[v] = agreement;
            if (agreement >= MIN_AGREEMENT) tally.eligible += agreement;
        }
    }

    /// @dev own[v]: the index of validator v among the trainers (n if none). Both lists ascend, so
    /// one merge walk finds every match.
    function _ownIndexes(address[] calldata trainers, address[] calldata validators)
        private
        pure
        returns (uint256[] memory own)
    {
        uint256 n = trainers.length;
        own = new uint256[](validators.length);
        uint256 i = 0;
        for (uint256 v = 0; v < validators.length; ++v) {
            address validator = validators[v];
            while (i < n && trainers[i] < validator) ++i;
            own[v] = i < n && trainers[i] == validator ? i : n;
        }
    }

    /// @dev n[v][i] = max(s[v][i], 0) * SCALE / sum_j max(s[v][j], 0), its own entry left out; flags
    /// (all negative) normalize to 0 and are marked. The own entry stays 0 and is never read.
    function _normalize(Votes memory votes, int256[][] calldata scores) private pure {
        uint256 n = votes.trainers;
        uint256[] memory entries = votes.entries;
        (int256 unavailable, int256 harmful) = (SCORE_UNAVAILABLE, SCORE_HARMFUL);
        (uint256 markUnavailable, uint256 markFlagged) = (MARK_UNAVAILABLE, MARK_FLAGGED);
        for (uint256 v = 0; v < scores.length; ++v) {
            // One entry per trainer: its hash matched the revealed vector, which had one per revealer.
            int256[] calldata vector = scores[v];
            uint256 skip = votes.own[v];
            assembly ("memory-safe") {
                // total <= n * MAX_SCORE; entry * SCALE < 2**188; total >= entry > 0 where it divides
                let total := 0
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    let entry := calldataload(add(vector.offset, shl(5, i)))
                    if and(sgt(entry, 0), iszero(eq(i, skip))) { total := add(total, entry) }
                }
                let row := add(add(entries, 0x20), shl(5, mul(v, n)))
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    if eq(i, skip) { continue }
                    let entry := calldataload(add(vector.offset, shl(5, i)))
                    let normalized := 0
                    switch sgt(entry, 0)
                    case 1 { normalized := div(mul(entry, SCALE), total) }
                    default {
                        if eq(entry, unavailable) { normalized := markUnavailable }
                        // INVALID and HARMFUL: the two values just above UNAVAILABLE
                        if and(sgt(entry, unavailable), iszero(sgt(entry, harmful))) { normalized := markFlagged }
                    }
                    mstore(add(row, shl(5, i)), normalized)
                }
            }
        }
    }

    /// @dev Trainer i's outcome and consensus value c[i]: the stake-weighted lower median of its
    /// normalized entries over the validators that could fetch it (flags count as 0).
    function _judge(Votes memory votes, uint256 i) private pure returns (ITaskMarket.Outcome, uint256) {
        (uint256 totalStake, uint256 available, uint256 flagged, uint256 count) = _gather(votes, i);
        if (available == 0) return (ITaskMarket.Outcome.Unavailable, 0);
        if (2 * flagged > totalStake) return (ITaskMarket.Outcome.Rejected, 0);
        uint256 value = _median(votes.sorted, count, available);
        return (value > 0 ? ITaskMarket.Outcome.Accepted : ITaskMarket.Outcome.Worthless, value);
    }

    /// @dev The stakes of the validators other than trainer i itself (`totalStake`), of those that
    /// could fetch its update (`available`) and of those that flagged it invalid or harmful
    /// (`flagged`); the first `count` words of `votes.sorted` hold the available entries, ascending.
    /// Each is kept as `(entry << 128) | weight` (entry <= SCALE < 2**128, weight < 2**96), so that
    /// the words sort by entry; an insertion sort is the cheapest at MAX_VALIDATORS words.
    function _gather(Votes memory votes, uint256 i)
        private
        pure
        returns (uint256 totalStake, uint256 available, uint256 flagged, uint256 count)
    {
        uint256 n = votes.trainers;
        uint256[] memory entries = votes.entries;
        uint256[] memory stakes = votes.stakes;
        uint256[] memory own = votes.own;
        uint256[] memory sorted = votes.sorted;
        (uint256 markUnavailable, uint256 markFlagged) = (MARK_UNAVAILABLE, MARK_FLAGGED);
        assembly ("memory-safe") {
            let column := add(add(entries, 0x20), shl(5, i)) // entries[0 * n + i]
            let base := add(sorted, 0x20)
            for { let v := 0 } lt(v, mload(stakes)) { v := add(v, 1) } {
                if eq(mload(add(add(own, 0x20), shl(5, v))), i) { continue }
                let weight := mload(add(add(stakes, 0x20), shl(5, v)))
                totalStake := add(totalStake, weight)
                let entry := mload(add(column, shl(5, mul(v, n))))
                if eq(entry, markUnavailable) { continue }
                available := add(available, weight)
                if eq(entry, markFlagged) {
                    flagged := add(flagged, weight)
                    entry := 0
                }
                let key := or(shl(128, entry), weight)
                let j := count
                for {} gt(j, 0) { j := sub(j, 1) } {
                    let previous := mload(add(base, shl(5, sub(j, 1))))
                    if iszero(gt(previous, key)) { break }
                    mstore(add(base, shl(5, j)), previous)
                }
                mstore(add(base, shl(5, j)), key)
                count := add(count, 1)
            }
        }
    }

    /// @dev The smallest entry whose cumulative stake reaches half of `available`.
    function _median(uint256[] memory sorted, uint256 count, uint256 available) private pure returns (uint256 value) {
        assembly ("memory-safe") {
            let cumulative := 0
            for { let j := 0 } lt(j, count) { j := add(j, 1) } {
                let key := mload(add(add(sorted, 0x20), shl(5, j)))
                cumulative := add(cumulative, and(key, 0xffffffffffffffffffffffffffffffff))
                if iszero(lt(shl(1, cumulative), available)) {
                    value := shr(128, key)
                    break
                }
            }
        }
    }

    /// @dev a[v] = sum_i min(n[v][i], c[i]) / sum_i c[i] over the trainers other than v itself
    /// (SCALE when that sum is 0).
    function _agreement(Votes memory votes, Tally memory tally, uint256 v) private pure returns (uint256) {
        uint256 n = votes.trainers;
        uint256 skip = votes.own[v];
        uint256[] memory values = tally.values;
        uint256 covered = skip < n ? tally.totalValue - values[skip] : tally.totalValue;
        if (covered == 0) return SCALE;
        uint256[] memory entries = votes.entries;
        uint256 markFlagged = MARK_FLAGGED;
        uint256 clipped = 0;
        assembly ("memory-safe") {
            let row := add(add(entries, 0x20), shl(5, mul(v, n)))
            let column := add(values, 0x20)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let entry := mload(add(row, shl(5, i)))
                // Marks (flags) count as 0; the own entry is 0. The sum is at most n * SCALE.
                if lt(entry, markFlagged) {
                    let value := mload(add(column, shl(5, i)))
                    switch lt(entry, value)
                    case 1 { clipped := add(clipped, entry) }
                    default { clipped := add(clipped, value) }
                }
            }
        }
        return clipped * SCALE / covered;
    }

    /// @dev Credits each revealer's share of `budget` in proportion to c[i]; returns the total credited.
    function _payTrainers(
        uint256 taskId,
        uint16 roundNo,
        address[] calldata trainers,
        Tally memory tally,
        uint256 budget
    ) private returns (uint256 paid) {
        uint256 totalValue = tally.totalValue;
        for (uint256 i = 0; i < trainers.length; ++i) {
            uint256 value = tally.values[i];
            uint256 payout = value == 0 ? 0 : budget * value / totalValue;
            if (payout != 0) {
                StoredTrainer storage trainer = _trainers[taskId][trainers[i]];
                trainer.claimable = (trainer.claimable + payout).toUint96();
                paid += payout;
            }
            emit ITaskMarket.TrainerSettled(taskId, roundNo, trainers[i], tally.outcomes[i], value, payout);
        }
    }

    /// @dev Credits each score revealer at or above MIN_AGREEMENT its share of `budget` in
    /// proportion to a[v]; returns the total credited.
    function _payValidators(
        uint256 taskId,
        uint16 roundNo,
        address[] calldata validators,
        Tally memory tally,
        uint256 budget
    ) private returns (uint256 paid) {
        for (uint256 v = 0; v < validators.length; ++v) {
            uint256 agreement = tally.agreements[v];
            uint256 payout = agreement >= MIN_AGREEMENT ? budget * agreement / tally.eligible : 0;
            if (payout != 0) {
                StoredValidator storage validator = _validators[taskId][validators[v]];
                validator.claimable = (validator.claimable + payout).toUint96();
                paid += payout;
            }
            emit ITaskMarket.ValidatorSettled(taskId, roundNo, validators[v], agreement, payout);
        }
    }

    /// @dev Slashes and removes every Rejected revealer; returns the tokens slashed.
    function _slashRejected(
        uint256 taskId,
        ITaskMarket.TaskState storage state,
        address[] calldata trainers,
        ITaskMarket.Outcome[] memory outcomes,
        uint256 slashBps
    ) private returns (uint256 slashed) {
        uint16 roundNo = state.currentRound;
        uint16 removed = 0;
        for (uint256 i = 0; i < trainers.length; ++i) {
            if (outcomes[i] != ITaskMarket.Outcome.Rejected) continue;
            (uint256 amount, bool seated) = _slashTrainer(taskId, roundNo, trainers[i], slashBps);
            slashed += amount;
            if (seated) ++removed;
        }
        state.trainerCount -= removed;
    }

    /**
     * @dev Slashes and removes each listed committer of the current round, which must be exactly
     * the committers that did not reveal; returns the tokens slashed.
     */
    function _slashCommitters(
        uint256 taskId,
        ITaskMarket.TaskState storage state,
        StoredRound storage round,
        address[] calldata accounts,
        uint256 slashBps
    ) private returns (uint256 slashed) {
        uint16 roundNo = state.currentRound;
        uint16 removed = 0;
        for (uint256 i = 0; i < accounts.length; ++i) {
            address account = accounts[i];
            StoredTrainer storage trainer = _trainers[taskId][account];
            if (trainer.lastCommitRound != roundNo) revert ITaskMarket.TaskMarketNotCommitted(taskId, account, roundNo);
            if (trainer.lastRevealRound == roundNo) revert ITaskMarket.TaskMarketRevealed(taskId, account);
            // A committer leaves an open round only during a pause, and stays marked `leaving`:
            // neither joined nor leaving means listed twice.
            if (!trainer.joined && !trainer.leaving) revert ITaskMarket.TaskMarketAlreadyRejected(taskId, account);
            (uint256 amount, bool seated) = _slashTrainer(taskId, roundNo, account, slashBps);
            slashed += amount;
            if (seated) ++removed;
        }
        // Cannot underflow: every reveal follows a commit in the same round.
        uint16 expected = round.commitCount - round.revealCount;
        // Cannot truncate below: distinct non-revealers, so at most `expected` of them.
        if (accounts.length != expected) {
            revert ITaskMarket.TaskMarketNonRevealersMismatch(taskId, uint16(accounts.length), expected);
        }
        state.trainerCount -= removed;
    }

    /// @dev Cuts a trainer's stake by `slashBps` and removes it from the task; returns the cut and
    /// whether it still held a seat. One that left during a pause kept exactly the cut at stake.
    function _slashTrainer(uint256 taskId, uint16 roundNo, address account, uint256 slashBps)
        private
        returns (uint256 amount, bool seated)
    {
        StoredTrainer storage trainer = _trainers[taskId][account];
        uint256 stake = trainer.stake;
        seated = trainer.joined;
        amount = seated ? stake * slashBps / BPS : stake;
        // Cannot truncate: amount <= stake, which fits in uint96.
        trainer.stake = uint96(stake - amount);
        trainer.joined = false;
        trainer.leaving = false;
        emit ITaskMarket.TrainerSlashed(taskId, roundNo, account, amount);
    }

    /// @dev Frees the seats of the trainers bound to the round that did not commit, and returns
    /// their charges (burned with the slashes; their records catch up when they next act, see
    /// {TaskMarketStorage-_seatLost}). A counter, not a list: the cost does not grow with them.
    function _unseatUncommitted(
        uint256 taskId,
        ITaskMarket.TaskState storage state,
        StoredTerms storage terms,
        StoredRound storage round
    ) private returns (uint256 charged) {
        uint16 count = round.uncommitted;
        if (count == 0) return 0;
        state.trainerCount -= count;
        charged = count * _seatCharge(terms);
        emit ITaskMarket.TrainersUnseated(taskId, state.currentRound, count, charged);
    }

    /// @dev Cuts a validator's stake by `slashBps` and removes it; returns the cut. One that left
    /// during a pause kept exactly the cut at stake.
    function _slashValidator(
        uint256 taskId,
        uint16 roundNo,
        address account,
        StoredValidator storage validator,
        uint256 slashBps
    ) private returns (uint256 amount) {
        uint256 stake = validator.stake;
        amount = validator.joined ? stake * slashBps / BPS : stake;
        // Cannot truncate: amount <= stake, which fits in uint96.
        validator.stake = uint96(stake - amount);
        validator.joined = false;
        validator.leaving = false;
        emit ITaskMarket.ValidatorSlashed(taskId, roundNo, account, amount);
    }

    /**
     * @dev Slashes and removes each listed validator, which must be exactly the validators that
     * committed scores in the current round and did not reveal them; returns the tokens slashed.
     */
    function _slashSilentValidators(
        uint256 taskId,
        ITaskMarket.TaskState storage state,
        StoredRound storage round,
        address[] calldata accounts,
        uint256 slashBps
    ) private returns (uint256 slashed) {
        uint16 roundNo = state.currentRound;
        uint16 removed = 0;
        for (uint256 i = 0; i < accounts.length; ++i) {
            address account = accounts[i];
            StoredValidator storage validator = _validators[taskId][account];
            // A score committer leaves an open round only during a pause, marked `leaving`:
            // neither joined nor leaving means listed twice.
            if (
                validator.lastScoreCommitRound != roundNo || validator.lastScoreRevealRound == roundNo
                    || !(validator.joined || validator.leaving)
            ) revert ITaskMarket.TaskMarketNotSilent(taskId, account);
            if (validator.joined) ++removed;
            slashed += _slashValidator(taskId, roundNo, account, validator, slashBps);
        }
        // Cannot underflow: every score reveal follows a score commit in the same round.
        uint16 expected = round.scoreCommitCount - round.scoreRevealCount;
        // Cannot truncate below: distinct silent validators, so at most `expected` of them.
        if (accounts.length != expected) {
            revert ITaskMarket.TaskMarketSilentValidatorsMismatch(taskId, uint16(accounts.length), expected);
        }
        state.validatorCount -= removed;
    }
}

/**
 * @title TaskMarket
 * @notice Reward pools, stakes, commit/reveal rounds for trainers and validators, on-chain
 * consensus, slashing and claims for federated-learning tasks. See {ITaskMarket} for the protocol.
 * @dev Pausing (by the contract owner) stops new tasks, joins, new rounds, commits and settlement.
 * Reveals (of updates and of scores) stay open, so that nobody is slashed for a pause, and so does
 * every way for money to leave (claim, leave, leaveValidator, withdrawStake, cancelTask).
 *
 * Storage is packed for the gas targets in docs/protocol.md: {commit} and {reveal} touch one slot of
 * task state, one round slot, one trainer slot and one commitment slot each; {commitScores} and
 * {revealScores} the same with a validator slot.
 *
 * {finalizeRound} and {abortRound} run in {TaskMarketSettlement}, deployed by the constructor and
 * called by delegatecall (as Compound III's Comet does with CometExt): the whole market would not
 * fit in the 24 KiB a contract may hold. They run in this contract's storage and context, behind
 * its pause and re-entrancy guards, and revert with its errors.
 */
contract TaskMarket is TaskMarketStorage, ITaskMarket, EIP712, Nonces, Ownable, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @dev Placeholder written to a trainer's commitment slot (and a validator's score-commitment
    /// slot) at join, so that every commit is a non-zero to non-zero store (5,000 gas) rather than
    /// a fresh one (22,100): keeps commit and commitScores under 50k gas. Never a valid commitment
    /// (a keccak256 output of 1 is infeasible).
    bytes32 private constant EMPTY_COMMITMENT = bytes32(uint256(1));

    bytes32 private constant TASK_TERMS_TYPEHASH = keccak256(
        "TaskTerms(bytes32 specHash,address coordinator,uint16 rounds,uint16 minTrainers,uint16 maxTrainers,"
        "uint16 slashBps,uint32 commitWindow,uint32 revealWindow,uint256 rewardPool,uint256 minStake,"
        "uint16 minValidators,uint16 maxValidators,uint16 validatorShareBps,uint32 scoreWindow,"
        "uint32 scoreRevealWindow,uint256 minValidatorStake)"
    );
    bytes32 private constant CREATE_TASK_TYPEHASH = keccak256(
        "CreateTask(TaskTerms terms,address owner,uint256 nonce,uint256 deadline)"
        "TaskTerms(bytes32 specHash,address coordinator,uint16 rounds,uint16 minTrainers,uint16 maxTrainers,"
        "uint16 slashBps,uint32 commitWindow,uint32 revealWindow,uint256 rewardPool,uint256 minStake,"
        "uint16 minValidators,uint16 maxValidators,uint16 validatorShareBps,uint32 scoreWindow,"
        "uint32 scoreRevealWindow,uint256 minValidatorStake)"
    );

    uint256 private immutable _settlementGrace;
    /// @dev The {TaskMarketSettlement} that {finalizeRound} and {abortRound} run in.
    address private immutable _settlement;

    /**
     * @param token_ the reward and stake token (an ERC-20 with EIP-2612 permit for {createTaskFor}).
     * @param settlementGrace_ seconds after a round closed during which the coordinator may start
     * the next one before anyone may {expireTask}.
     * @param admin may pause and unpause.
     */
    constructor(IERC20 token_, uint256 settlementGrace_, address admin)
        TaskMarketStorage(token_)
        EIP712("TaskMarket", "1")
        Ownable(admin)
    {
        _settlementGrace = settlementGrace_;
        _settlement = address(new TaskMarketSettlement(token_, settlementGrace_));
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
    function expireTask(uint256 taskId) external whenNotPaused nonReentrant {
        TaskState storage state = _openTask(taskId);
        uint16 roundNo = state.currentRound;
        if (roundNo == 0) revert TaskMarketWrongPhase(taskId, RoundPhase.None); // the owner may cancel instead
        StoredRound storage round = _rounds[taskId][roundNo];
        if (!round.closed) revert TaskMarketWrongPhase(taskId, _phase(state, round));
        // A pause stops startRound: the grace counts again from the unpause.
        uint256 closedAt = round.closedAt;
        uint256 unpausedAt = _unpausedAt;
        uint256 expiresAt = (closedAt > unpausedAt ? closedAt : unpausedAt) + _settlementGrace;
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
        StoredTerms storage terms = _terms[taskId];
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        uint16 roundNo = state.currentRound;
        bool open = roundNo != 0 && !_rounds[taskId][roundNo].closed;
        if (trainer.joined) {
            if (!_seatLost(trainer, open ? roundNo - 1 : roundNo)) revert TaskMarketAlreadyJoined(taskId, msg.sender);
            _settleLostSeat(trainer, terms);
        }
        // One that left this round during a pause is still in it until it closes.
        if (open && trainer.lastCommitRound == roundNo) revert TaskMarketOpenCommitment(taskId, msg.sender, roundNo);
        if (state.trainerCount >= terms.maxTrainers) revert TaskMarketTaskFull(taskId, terms.maxTrainers);

        uint256 stake = terms.minStake;
        trainer.stake = (trainer.stake + stake).toUint96();
        trainer.joined = true;
        trainer.firstRound = roundNo + 1;
        trainer.leaving = false;
        state.trainerCount += 1;
        if (_commitments[taskId][msg.sender] == bytes32(0)) _commitments[taskId][msg.sender] = EMPTY_COMMITMENT;
        emit TrainerJoined(taskId, msg.sender, stake);
        _token.safeTransferFrom(msg.sender, address(this), stake);
    }

    /// @inheritdoc ITaskMarket
    function leave(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        StoredTerms storage terms = _terms[taskId];
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        bool open = roundNo != 0 && !round.closed;
        if (!trainer.joined || _seatLost(trainer, open ? roundNo - 1 : roundNo)) {
            revert TaskMarketNotJoined(taskId, msg.sender);
        }
        RoundPhase phase = _phase(state, round);
        uint256 stake = trainer.stake;
        uint256 kept = 0; // stays at stake
        uint256 charge = 0; // burned now
        if (open && trainer.lastCommitRound == roundNo) {
            // Settlement is stopped while paused: a committer may go, leaving what a slash could take.
            if (!paused()) revert TaskMarketOpenCommitment(taskId, msg.sender, roundNo);
            kept = stake * terms.slashBps / BPS;
            trainer.leaving = true;
        } else if (open && trainer.firstRound <= roundNo) {
            // Bound to the round and not committed: free while it may still commit, charged as a
            // missed round once the commit phase is over.
            round.uncommitted -= 1;
            if (phase != RoundPhase.Commit) charge = _seatCharge(terms);
        }
        trainer.stake = uint96(kept);
        trainer.joined = false;
        state.trainerCount -= 1;
        // The last trainer yet to commit leaving ends the commit phase, as its commit would have:
        // a later join cannot reopen it.
        if (phase == RoundPhase.Commit && round.commitCount >= state.trainerCount) _closeCommitPhase(round);
        uint256 refund = stake - kept - charge;
        emit TrainerLeft(taskId, msg.sender, refund);
        if (charge != 0) {
            emit TrainersUnseated(taskId, roundNo, 1, charge);
            _token.safeTransfer(BURN_ADDRESS, charge);
        }
        _token.safeTransfer(msg.sender, refund);
    }

    // ---------------------------------------------------------------- validators

    /// @inheritdoc ITaskMarket
    function joinAsValidator(uint256 taskId, bytes32 dataHash, uint256 stake) external whenNotPaused nonReentrant {
        TaskState storage state = _openTask(taskId);
        StoredTerms storage terms = _terms[taskId];
        StoredValidator storage validator = _validators[taskId][msg.sender];
        if (validator.joined) revert TaskMarketAlreadyValidator(taskId, msg.sender);
        // One that left this round during a pause is still in it until it closes.
        uint16 roundNo = state.currentRound;
        if (validator.lastScoreCommitRound == roundNo && roundNo != 0 && !_rounds[taskId][roundNo].closed) {
            revert TaskMarketOpenScoreCommitment(taskId, msg.sender, roundNo);
        }
        if (state.validatorCount >= terms.maxValidators) {
            revert TaskMarketValidatorsFull(taskId, terms.maxValidators);
        }
        uint256 minimum = terms.minValidatorStake;
        if (stake < minimum) revert TaskMarketStakeTooLow(taskId, stake, minimum);
        if (dataHash == bytes32(0)) revert TaskMarketInvalidDataHash(taskId);

        // What a slash left of an earlier stake stays at stake, and counts as weight, with the new one.
        validator.stake = (validator.stake + stake).toUint96();
        validator.joined = true;
        validator.leaving = false;
        validator.dataHash = dataHash;
        state.validatorCount += 1;
        if (_scoreCommitments[taskId][msg.sender] == bytes32(0)) {
            _scoreCommitments[taskId][msg.sender] = EMPTY_COMMITMENT;
        }
        emit ValidatorJoined(taskId, msg.sender, stake, dataHash);
        _token.safeTransferFrom(msg.sender, address(this), stake);
    }

    /// @inheritdoc ITaskMarket
    function leaveValidator(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        StoredValidator storage validator = _validators[taskId][msg.sender];
        if (!validator.joined) revert TaskMarketNotValidator(taskId, msg.sender);
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        uint256 stake = validator.stake;
        uint256 kept = 0;
        if (validator.lastScoreCommitRound == roundNo && roundNo != 0 && !round.closed) {
            // Settlement is stopped while paused: a score committer may go, leaving what a slash could take.
            if (!paused()) revert TaskMarketOpenScoreCommitment(taskId, msg.sender, roundNo);
            kept = stake * _terms[taskId].slashBps / BPS;
            validator.leaving = true;
        }
        RoundPhase phase = _phase(state, round);
        stake -= kept;
        validator.stake = uint96(kept);
        validator.joined = false;
        state.validatorCount -= 1;
        // The last validator yet to commit leaving ends the score-commit phase, as its commit would have.
        if (phase == RoundPhase.ScoreCommit && round.scoreCommitCount >= state.validatorCount) {
            _closeScoreCommitPhase(round);
        }
        emit ValidatorLeft(taskId, msg.sender, stake);
        _token.safeTransfer(msg.sender, stake);
    }

    /// @inheritdoc ITaskMarket
    function commitScores(uint256 taskId, bytes32 commitment) external {
        TaskState storage state = _existingTask(taskId);
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.ScoreCommit) revert TaskMarketWrongPhase(taskId, phase);
        StoredValidator storage validator = _validators[taskId][msg.sender];
        if (!validator.joined) revert TaskMarketNotValidator(taskId, msg.sender);
        if (validator.lastScoreCommitRound == roundNo) {
            revert TaskMarketScoresAlreadyCommitted(taskId, msg.sender, roundNo);
        }

        validator.lastScoreCommitRound = roundNo;
        _scoreCommitments[taskId][msg.sender] = commitment;
        uint16 commitCount = round.scoreCommitCount + 1;
        round.scoreCommitCount = commitCount;
        if (commitCount >= state.validatorCount) _closeScoreCommitPhase(round);
        emit ScoresCommitted(taskId, roundNo, msg.sender, commitment);
    }

    /// @inheritdoc ITaskMarket
    function revealScores(uint256 taskId, int256[] calldata scores, bytes32 salt) external {
        uint16 roundNo = _state[taskId].currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        {
            RoundPhase phase = _phase(_existingTask(taskId), round);
            if (phase != RoundPhase.ScoreReveal) revert TaskMarketWrongPhase(taskId, phase);
        }
        StoredValidator storage validator = _validators[taskId][msg.sender];
        if (validator.lastScoreCommitRound != roundNo) revert TaskMarketScoresNotCommitted(taskId, msg.sender, roundNo);
        if (validator.lastScoreRevealRound == roundNo) {
            revert TaskMarketScoresAlreadyRevealed(taskId, msg.sender, roundNo);
        }
        {
            uint256 expectedCount = round.revealCount;
            if (scores.length != expectedCount) {
                revert TaskMarketScoreCountMismatch(taskId, scores.length, expectedCount);
            }
            uint256 outOfRange = _firstOutOfRange(scores);
            if (outOfRange != scores.length) revert TaskMarketScoreOutOfRange(taskId, outOfRange);
        }
        (bytes32 commitment, bytes32 vectorHash, uint256 encoded) = _encodeReveal(taskId, roundNo, scores, salt);
        if (_scoreCommitments[taskId][msg.sender] != commitment) {
            revert TaskMarketScoreCommitmentMismatch(taskId, msg.sender);
        }

        validator.lastScoreRevealRound = roundNo;
        // What settlement checks the submitted vector against: the vector itself lives in the event.
        _scoreCommitments[taskId][msg.sender] = vectorHash;
        uint16 revealCount = round.scoreRevealCount + 1;
        round.scoreRevealCount = revealCount;
        if (revealCount == round.scoreCommitCount) _closeScoreRevealPhase(round);
        // emit ScoresRevealed(taskId, roundNo, msg.sender, scores), from the encoding already in memory
        bytes32 topic = ScoresRevealed.selector;
        assembly ("memory-safe") {
            log4(encoded, add(0x40, shl(5, scores.length)), topic, taskId, roundNo, caller())
        }
    }

    /// @dev Index of the first entry that is neither a flag nor within +-MAX_SCORE, or the length if
    /// none. The flags are the three smallest int256 values, far below -MAX_SCORE.
    function _firstOutOfRange(int256[] calldata scores) private pure returns (uint256 index) {
        (int256 max, int256 min, int256 lastFlag) = (MAX_SCORE, -MAX_SCORE, SCORE_HARMFUL);
        assembly ("memory-safe") {
            for {} lt(index, scores.length) { index := add(index, 1) } {
                let entry := calldataload(add(scores.offset, shl(5, index)))
                if or(sgt(entry, max), and(slt(entry, min), sgt(entry, lastFlag))) { break }
            }
        }
    }

    /**
     * @dev Writes `abi.encode(taskId, roundNo, msg.sender, scores, salt)` to new memory and hashes
     * it (the commitment); then overwrites the salt's word with 0x20, which turns the words from
     * there on into `abi.encode(scores)`: its hash is what settlement checks the vector against, and
     * `encoded` points at it for the event. One copy of the vector instead of three.
     */
    function _encodeReveal(uint256 taskId, uint16 roundNo, int256[] calldata scores, bytes32 salt)
        private
        view
        returns (bytes32 commitment, bytes32 vectorHash, uint256 encoded)
    {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := shl(5, scores.length)
            mstore(ptr, taskId)
            mstore(add(ptr, 0x20), roundNo)
            mstore(add(ptr, 0x40), caller())
            mstore(add(ptr, 0x60), 0xa0) // offset of the vector
            mstore(add(ptr, 0x80), salt)
            mstore(add(ptr, 0xa0), scores.length)
            calldatacopy(add(ptr, 0xc0), scores.offset, size)
            commitment := keccak256(ptr, add(0xc0, size))
            encoded := add(ptr, 0x80)
            mstore(encoded, 0x20)
            vectorHash := keccak256(encoded, add(0x40, size))
            mstore(0x40, add(ptr, add(0xc0, size)))
        }
    }

    // ---------------------------------------------------------------- both roles

    /// @inheritdoc ITaskMarket
    function withdrawStake(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        StoredValidator storage validator = _validators[taskId][msg.sender];
        bool open = state.status == TaskStatus.Open;
        uint16 roundNo = state.currentRound;
        uint16 lastClosed = _lastClosedRound(taskId, state);
        // What one that left during a pause kept at stake waits for its round to close.
        if (lastClosed != roundNo) {
            if (trainer.leaving && trainer.lastCommitRound == roundNo) {
                revert TaskMarketOpenCommitment(taskId, msg.sender, roundNo);
            }
            if (validator.leaving && validator.lastScoreCommitRound == roundNo) {
                revert TaskMarketOpenScoreCommitment(taskId, msg.sender, roundNo);
            }
        }
        if (_seatLost(trainer, lastClosed)) {
            _settleLostSeat(trainer, _terms[taskId]);
        } else if (trainer.joined) {
            if (open) revert TaskMarketStillJoined(taskId, msg.sender);
            trainer.joined = false;
            state.trainerCount -= 1;
        }
        if (validator.joined) {
            if (open) revert TaskMarketStillJoined(taskId, msg.sender);
            validator.joined = false;
            state.validatorCount -= 1;
        }
        uint256 amount = uint256(trainer.stake) + validator.stake;
        if (amount == 0) revert TaskMarketNothingToWithdraw(taskId, msg.sender);
        trainer.stake = 0;
        validator.stake = 0;
        emit StakeWithdrawn(taskId, msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc ITaskMarket
    function claim(uint256 taskId) external nonReentrant {
        TaskState storage state = _existingTask(taskId);
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        StoredValidator storage validator = _validators[taskId][msg.sender];
        uint256 asTrainer = trainer.claimable;
        uint256 asValidator = validator.claimable;
        uint256 amount = asTrainer + asValidator;
        if (amount == 0) revert TaskMarketNothingToClaim(taskId, msg.sender);
        if (asTrainer != 0) trainer.claimable = 0;
        if (asValidator != 0) validator.claimable = 0;
        // Cannot underflow or truncate: every claimable token was added to `unclaimed` when credited.
        state.unclaimed -= uint96(amount);
        emit RewardsClaimed(taskId, msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- rounds

    /// @inheritdoc ITaskMarket
    function startRound(uint256 taskId, bytes32 modelHash) external whenNotPaused {
        TaskState storage state = _openTask(taskId);
        StoredTerms storage terms = _terms[taskId];
        if (msg.sender != terms.coordinator) revert TaskMarketNotCoordinator(taskId, msg.sender);
        uint16 previous = state.currentRound;
        if (previous != 0) {
            StoredRound storage last = _rounds[taskId][previous];
            if (!last.closed) revert TaskMarketWrongPhase(taskId, _phase(state, last));
            if (!last.aborted && !last.modelPublished) revert TaskMarketModelNotPublished(taskId, previous);
            bytes32 expected = state.modelHash;
            if (modelHash != expected) revert TaskMarketModelMismatch(taskId, expected, modelHash);
        }
        if (state.trainerCount < terms.minTrainers) {
            revert TaskMarketNotEnoughTrainers(taskId, state.trainerCount, terms.minTrainers);
        }
        if (state.validatorCount < terms.minValidators) {
            revert TaskMarketNotEnoughValidators(taskId, state.validatorCount, terms.minValidators);
        }

        uint16 roundNo = previous + 1;
        uint40 commitDeadline = (block.timestamp + terms.commitWindow).toUint40();
        uint32 revealWindow = terms.revealWindow;
        state.currentRound = roundNo;
        state.modelHash = modelHash;
        StoredRound storage round = _rounds[taskId][roundNo];
        round.commitDeadline = commitDeadline;
        round.revealLength = revealWindow;
        round.scoreCommitLength = terms.scoreWindow;
        round.scoreRevealLength = terms.scoreRevealWindow;
        // Every trainer joined now is bound to this round (joins from here on are bound to the next).
        round.uncommitted = state.trainerCount;
        round.modelHash = modelHash;
        emit RoundStarted(taskId, roundNo, modelHash, commitDeadline, uint64(commitDeadline) + revealWindow);
    }

    /// @inheritdoc ITaskMarket
    function commit(uint256 taskId, bytes32 commitment) external {
        TaskState storage state = _existingTask(taskId);
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Commit) revert TaskMarketWrongPhase(taskId, phase);
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        if (!trainer.joined || _seatLost(trainer, roundNo - 1)) revert TaskMarketNotJoined(taskId, msg.sender);
        if (trainer.lastCommitRound == roundNo) revert TaskMarketAlreadyCommitted(taskId, msg.sender, roundNo);

        trainer.lastCommitRound = roundNo;
        _commitments[taskId][msg.sender] = commitment;
        uint16 commitCount = round.commitCount + 1;
        round.commitCount = commitCount;
        if (trainer.firstRound <= roundNo) round.uncommitted -= 1;
        // The last joined trainer to commit opens the reveal phase, so that a later join cannot reopen it.
        if (commitCount >= state.trainerCount) _closeCommitPhase(round);
        emit Committed(taskId, roundNo, msg.sender, commitment);
    }

    /// @inheritdoc ITaskMarket
    function reveal(uint256 taskId, bytes32 updateHash, bytes32 salt) external {
        TaskState storage state = _existingTask(taskId);
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Reveal) revert TaskMarketWrongPhase(taskId, phase);
        StoredTrainer storage trainer = _trainers[taskId][msg.sender];
        if (trainer.lastCommitRound != roundNo) revert TaskMarketNotCommitted(taskId, msg.sender, roundNo);
        if (trainer.lastRevealRound == roundNo) revert TaskMarketAlreadyRevealed(taskId, msg.sender, roundNo);
        bytes32 expected = keccak256(abi.encode(taskId, roundNo, msg.sender, updateHash, salt));
        if (_commitments[taskId][msg.sender] != expected) revert TaskMarketCommitmentMismatch(taskId, msg.sender);

        trainer.lastRevealRound = roundNo;
        uint16 revealCount = round.revealCount + 1;
        round.revealCount = revealCount;
        if (revealCount == round.commitCount) _closeRevealPhase(round);
        emit Revealed(taskId, roundNo, msg.sender, updateHash);
    }

    /// @inheritdoc ITaskMarket
    function finalizeRound(uint256, Settlement calldata) external whenNotPaused nonReentrant {
        _settle();
    }

    /// @inheritdoc ITaskMarket
    function abortRound(uint256, address[] calldata, address[] calldata) external whenNotPaused nonReentrant {
        _settle();
    }

    /// @inheritdoc ITaskMarket
    function publishModel(uint256 taskId, bytes32 modelHash, bytes32 reportHash) external {
        TaskState storage state = _existingTask(taskId);
        TaskStatus status = state.status;
        // Completed: the last round's aggregate is published after the task ended.
        if (status != TaskStatus.Open && status != TaskStatus.Completed) revert TaskMarketTaskNotOpen(taskId, status);
        if (msg.sender != _terms[taskId].coordinator) revert TaskMarketNotCoordinator(taskId, msg.sender);
        uint16 roundNo = state.currentRound;
        StoredRound storage round = _rounds[taskId][roundNo];
        RoundPhase phase = _phase(state, round);
        if (phase != RoundPhase.Finalized) revert TaskMarketWrongPhase(taskId, phase);
        if (round.modelPublished) revert TaskMarketModelAlreadyPublished(taskId, roundNo);

        round.modelPublished = true;
        round.newModelHash = modelHash;
        round.reportHash = reportHash;
        state.modelHash = modelHash;
        emit ModelPublished(taskId, roundNo, modelHash, reportHash);
    }

    // ---------------------------------------------------------------- admin

    /// @notice Stops new tasks, joins, new rounds, settlement and expiry. Commits, reveals and every
    /// exit stay open, so that a pause never costs a participant a slash, a charge or its stake.
    function pause() external onlyOwner {
        _pause();
    }

    /// @notice Resumes; the coordinator then gets a whole settlement grace before anyone else may
    /// abort a round or expire a task, since a pause stopped startRound and settlement.
    function unpause() external onlyOwner {
        _unpause();
        _unpausedAt = uint64(block.timestamp);
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
        StoredTerms storage stored = _terms[taskId];
        terms = TaskTerms({
            specHash: stored.specHash,
            coordinator: stored.coordinator,
            rounds: stored.rounds,
            minTrainers: stored.minTrainers,
            maxTrainers: stored.maxTrainers,
            slashBps: stored.slashBps,
            commitWindow: stored.commitWindow,
            revealWindow: stored.revealWindow,
            rewardPool: stored.rewardPool,
            minStake: stored.minStake,
            minValidators: stored.minValidators,
            maxValidators: stored.maxValidators,
            validatorShareBps: stored.validatorShareBps,
            scoreWindow: stored.scoreWindow,
            scoreRevealWindow: stored.scoreRevealWindow,
            minValidatorStake: stored.minValidatorStake
        });
        state = _state[taskId];
    }

    /// @inheritdoc ITaskMarket
    function getRound(uint256 taskId, uint16 round) external view returns (Round memory) {
        _existingTask(taskId);
        StoredRound storage stored = _rounds[taskId][round];
        uint64 commitDeadline = stored.commitDeadline;
        uint64 revealDeadline = commitDeadline + stored.revealLength;
        uint64 scoreCommitDeadline = revealDeadline + stored.scoreCommitLength;
        return Round({
            commitDeadline: commitDeadline,
            revealDeadline: revealDeadline,
            scoreCommitDeadline: scoreCommitDeadline,
            scoreRevealDeadline: scoreCommitDeadline + stored.scoreRevealLength,
            commitCount: stored.commitCount,
            revealCount: stored.revealCount,
            scoreCommitCount: stored.scoreCommitCount,
            scoreRevealCount: stored.scoreRevealCount,
            closed: stored.closed,
            aborted: stored.aborted,
            modelPublished: stored.modelPublished,
            closedAt: stored.closedAt,
            payout: stored.payout,
            modelHash: stored.modelHash,
            newModelHash: stored.newModelHash,
            reportHash: stored.reportHash
        });
    }

    /// @inheritdoc ITaskMarket
    function roundPhase(uint256 taskId) external view returns (RoundPhase) {
        TaskState storage state = _existingTask(taskId);
        return _phase(state, _rounds[taskId][state.currentRound]);
    }

    /// @inheritdoc ITaskMarket
    function getTrainer(uint256 taskId, address trainer) external view returns (Trainer memory) {
        StoredTrainer storage stored = _trainers[taskId][trainer];
        Trainer memory view_ = Trainer({
            stake: stored.stake,
            claimable: stored.claimable,
            lastCommitRound: stored.lastCommitRound,
            lastRevealRound: stored.lastRevealRound,
            joined: stored.joined
        });
        // A lost seat as the contract treats it, before the trainer's record catches up.
        if (stored.joined && _state[taskId].status != TaskStatus.None) {
            if (_seatLost(stored, _lastClosedRound(taskId, _state[taskId]))) {
                view_.stake -= uint96(_seatCharge(_terms[taskId]));
                view_.joined = false;
            }
        }
        return view_;
    }

    /// @inheritdoc ITaskMarket
    function getValidator(uint256 taskId, address validator) external view returns (Validator memory) {
        StoredValidator storage stored = _validators[taskId][validator];
        return Validator({
            stake: stored.stake,
            claimable: stored.claimable,
            lastScoreCommitRound: stored.lastScoreCommitRound,
            lastScoreRevealRound: stored.lastScoreRevealRound,
            joined: stored.joined,
            dataHash: stored.dataHash
        });
    }

    /// @inheritdoc ITaskMarket
    function getCommitment(uint256 taskId, address trainer)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed)
    {
        StoredTrainer storage t = _trainers[taskId][trainer];
        round = t.lastCommitRound;
        if (round == 0) return (0, bytes32(0), false);
        return (round, _commitments[taskId][trainer], t.lastRevealRound == round);
    }

    /// @inheritdoc ITaskMarket
    function getScoreCommitment(uint256 taskId, address validator)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed)
    {
        StoredValidator storage v = _validators[taskId][validator];
        round = v.lastScoreCommitRound;
        if (round == 0) return (0, bytes32(0), false);
        return (round, _scoreCommitments[taskId][validator], v.lastScoreRevealRound == round);
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

    // ---------------------------------------------------------------- internals: tasks

    /// @dev Takes the terms in memory: decoded from calldata once, rather than at every field read.
    function _createTask(TaskTerms memory terms, address owner) private returns (uint256 taskId) {
        _validateTerms(terms);
        taskId = ++_taskCount;
        // Cannot truncate: _validateTerms bounds every amount by type(uint96).max.
        _terms[taskId] = StoredTerms({
            specHash: terms.specHash,
            coordinator: terms.coordinator,
            rounds: terms.rounds,
            minTrainers: terms.minTrainers,
            maxTrainers: terms.maxTrainers,
            slashBps: terms.slashBps,
            commitWindow: terms.commitWindow,
            revealWindow: terms.revealWindow,
            scoreWindow: terms.scoreWindow,
            scoreRevealWindow: terms.scoreRevealWindow,
            minValidators: terms.minValidators,
            maxValidators: terms.maxValidators,
            validatorShareBps: terms.validatorShareBps,
            minStake: uint96(terms.minStake),
            rewardPool: uint96(terms.rewardPool),
            minValidatorStake: uint96(terms.minValidatorStake)
        });
        TaskState storage state = _state[taskId];
        state.owner = owner;
        state.status = TaskStatus.Open;
        state.pool = uint96(terms.rewardPool);
        emit TaskCreated(taskId, owner, terms.coordinator, terms);
    }

    function _validateTerms(TaskTerms memory terms) private pure {
        if (terms.coordinator == address(0)) revert TaskMarketInvalidTerms("coordinator");
        if (terms.rounds == 0) revert TaskMarketInvalidTerms("rounds");
        if (terms.minTrainers == 0) revert TaskMarketInvalidTerms("minTrainers");
        if (terms.maxTrainers < terms.minTrainers || terms.maxTrainers > MAX_TRAINERS) {
            revert TaskMarketInvalidTerms("maxTrainers");
        }
        if (terms.slashBps > BPS) revert TaskMarketInvalidTerms("slashBps");
        _checkWindow(terms.commitWindow, "commitWindow");
        _checkWindow(terms.revealWindow, "revealWindow");
        if (terms.rewardPool == 0 || terms.rewardPool > type(uint96).max) revert TaskMarketInvalidTerms("rewardPool");
        if (terms.minStake == 0 || terms.minStake > type(uint96).max) revert TaskMarketInvalidTerms("minStake");
        if (terms.minValidators == 0 || terms.minValidators > terms.maxValidators) {
            revert TaskMarketInvalidTerms("minValidators");
        }
        if (terms.maxValidators > MAX_VALIDATORS) revert TaskMarketInvalidTerms("maxValidators");
        if (terms.validatorShareBps > BPS) revert TaskMarketInvalidTerms("validatorShareBps");
        _checkWindow(terms.scoreWindow, "scoreWindow");
        _checkWindow(terms.scoreRevealWindow, "scoreRevealWindow");
        if (terms.minValidatorStake == 0 || terms.minValidatorStake > type(uint96).max) {
            revert TaskMarketInvalidTerms("minValidatorStake");
        }
    }

    /// @dev A phase window lasts at least a second and at most MAX_WINDOW.
    function _checkWindow(uint32 window, string memory field) private pure {
        if (window == 0) revert TaskMarketInvalidTerms(field);
        if (window > MAX_WINDOW) revert TaskMarketWindowTooLong(field, window, MAX_WINDOW);
    }

    /// @dev Brings a lost seat's record up to date: the charge the closing settlement burned comes
    /// off the stake, and the trainer is no longer joined (its seat was freed then).
    function _settleLostSeat(StoredTrainer storage trainer, StoredTerms storage terms) private {
        // Cannot underflow: a joined trainer holds at least minStake.
        trainer.stake -= uint96(_seatCharge(terms));
        trainer.joined = false;
    }

    function _hashCreateTask(TaskTerms memory terms, address owner, uint256 nonce, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        bytes32 termsHash = keccak256(abi.encode(TASK_TERMS_TYPEHASH, terms));
        return _hashTypedDataV4(keccak256(abi.encode(CREATE_TASK_TYPEHASH, termsHash, owner, nonce, deadline)));
    }

    // ---------------------------------------------------------------- internals: phases

    /// @dev Ends the commit phase now; the later deadlines follow at their windows.
    function _closeCommitPhase(StoredRound storage round) private {
        round.commitDeadline = uint40(block.timestamp);
    }

    /// @dev Ends the reveal phase now. Called in the reveal phase: the commit deadline passed or was
    /// closed, so this cannot underflow, and the new length is below the old one.
    function _closeRevealPhase(StoredRound storage round) private {
        round.revealLength = uint32(block.timestamp - round.commitDeadline);
    }

    /// @dev Ends the score-commit phase now. A round nobody committed to skips its reveal phase at
    /// the commit deadline, with the reveal deadline still ahead: that one is pulled in to now too,
    /// so that the deadlines never decrease.
    function _closeScoreCommitPhase(StoredRound storage round) private {
        uint256 revealDeadline = uint256(round.commitDeadline) + round.revealLength;
        if (block.timestamp < revealDeadline) {
            round.revealLength = uint32(block.timestamp - round.commitDeadline);
            round.scoreCommitLength = 0;
        } else {
            round.scoreCommitLength = uint32(block.timestamp - revealDeadline);
        }
    }

    /// @dev Ends the score-reveal phase now. A score was committed, so the score-commit deadline
    /// passed or was closed: this cannot underflow.
    function _closeScoreRevealPhase(StoredRound storage round) private {
        uint256 scoreCommitDeadline = uint256(round.commitDeadline) + round.revealLength + round.scoreCommitLength;
        round.scoreRevealLength = uint32(block.timestamp - scoreCommitDeadline);
    }

    // ---------------------------------------------------------------- internals: settlement

    /// @dev Runs the current call (finalizeRound or abortRound, same selector and arguments) in
    /// {TaskMarketSettlement} on this contract's storage, returning or reverting as it does.
    function _settle() private {
        address settlement = _settlement;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, 0, calldatasize())
            let success := delegatecall(gas(), settlement, ptr, calldatasize(), 0, 0)
            returndatacopy(ptr, 0, returndatasize())
            if iszero(success) { revert(ptr, returndatasize()) }
        }
    }
}
