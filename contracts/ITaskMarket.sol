// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title ITaskMarket
 * @notice A market for federated-learning tasks. A task owner locks a reward pool; trainers stake
 * to join; a coordinator runs rounds in which every trainer commits to the hash of its model
 * update, then reveals it; the coordinator settles each round with a cumulative rewards Merkle
 * root and the list of rejected trainers, whose stake is slashed into the pool. Trainers claim
 * what they earned with one Merkle proof, however many rounds they earned in.
 *
 * Money held always equals: open reward pools + stakes + allocated-but-unclaimed rewards.
 *
 * Round life cycle (see {roundPhase}):
 *   Commit   from {startRound} until the commit deadline, or until every joined trainer committed;
 *   Reveal   until the reveal deadline, or until every committer revealed;
 *   Settling until {finalizeRound} (coordinator, quorum reached) or {abortRound} (anyone, when the
 *            quorum was not reached or the coordinator missed the settlement grace period);
 *   Closed   afterwards. Every round, finalized or aborted, uses up one of the task's rounds; the
 *            last one refunds what is left of the pool to the owner.
 * A task whose coordinator stops starting rounds can be expired by anyone (see {expireTask}), so
 * a pool is never locked for good.
 */
interface ITaskMarket {
    /// @notice Everything a task owner commits to when posting a task. Signed as EIP-712 data.
    struct TaskTerms {
        bytes32 specHash; // sha256 of the task spec JSON in the content store
        address coordinator; // the only account allowed to start and finalize rounds
        uint16 rounds; // number of rounds; each round gets pool / rounds left as its budget
        uint16 minTrainers; // quorum: revealed updates needed to finalize a round
        uint16 maxTrainers; // most trainers joined at once
        uint16 slashBps; // share of stake slashed for a rejected update, in basis points
        uint32 commitWindow; // seconds
        uint32 revealWindow; // seconds
        uint256 rewardPool; // tokens locked by the owner
        uint256 minStake; // tokens a trainer stakes to join
    }

    /// @notice EIP-2612 permit that funds a relayed {createTaskFor}.
    struct Permit {
        uint256 value;
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    enum TaskStatus {
        None,
        Open,
        Completed,
        Cancelled,
        Expired
    }

    enum RoundPhase {
        None,
        Commit,
        Reveal,
        Settling,
        Finalized,
        Aborted
    }

    /// @notice Mutable state of a task. `currentRound` counts rounds started (1-based).
    struct TaskState {
        address owner;
        TaskStatus status;
        uint16 currentRound;
        uint16 trainerCount;
        uint96 pool; // reward tokens not yet allocated
        uint96 unclaimed; // allocated to trainers, not yet claimed
        bytes32 modelHash; // sha256 of the latest global model
        bytes32 rewardsRoot; // Merkle root over cumulative earnings (account, totalEarned)
    }

    struct Round {
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint16 commitCount;
        uint16 revealCount;
        bool closed;
        bool aborted;
        bytes32 modelHash; // global model trained on in this round
        bytes32 reportHash; // sha256 of the round report, set at finalization
        uint96 payout; // tokens allocated in this round
    }

    struct Trainer {
        uint96 stake;
        uint96 claimed; // rewards claimed so far in this task
        uint16 lastCommitRound;
        uint16 lastRevealRound;
        bool joined;
    }

    // ---------------------------------------------------------------- errors

    /// @dev A term of a task is out of range; `field` names it.
    error TaskMarketInvalidTerms(string field);
    /// @dev The relayed task's owner signature has expired.
    error TaskMarketSignatureExpired(uint256 deadline);
    /// @dev The signature over the task terms was not made by `owner`.
    error TaskMarketInvalidSignature(address owner);
    error TaskMarketUnknownTask(uint256 taskId);
    error TaskMarketTaskNotOpen(uint256 taskId, TaskStatus status);
    error TaskMarketNotTaskOwner(uint256 taskId, address account);
    error TaskMarketNotCoordinator(uint256 taskId, address account);
    /// @dev A task can be cancelled only before its first round.
    error TaskMarketTaskStarted(uint256 taskId);
    error TaskMarketTaskFull(uint256 taskId, uint16 maxTrainers);
    error TaskMarketAlreadyJoined(uint256 taskId, address trainer);
    error TaskMarketNotJoined(uint256 taskId, address trainer);
    /// @dev A joined trainer of an open task takes its stake back with {leave}.
    error TaskMarketStillJoined(uint256 taskId, address trainer);
    /// @dev The trainer committed in a round that is not closed yet.
    error TaskMarketOpenCommitment(uint256 taskId, address trainer, uint16 round);
    error TaskMarketNothingToWithdraw(uint256 taskId, address trainer);
    error TaskMarketNotEnoughTrainers(uint256 taskId, uint16 joined, uint16 required);
    /// @dev The coordinator may still start the next round until `expiresAt`.
    error TaskMarketNotExpired(uint256 taskId, uint256 expiresAt);
    error TaskMarketWrongPhase(uint256 taskId, RoundPhase phase);
    error TaskMarketAlreadyCommitted(uint256 taskId, address trainer, uint16 round);
    error TaskMarketNotCommitted(uint256 taskId, address trainer, uint16 round);
    error TaskMarketAlreadyRevealed(uint256 taskId, address trainer, uint16 round);
    error TaskMarketCommitmentMismatch(uint256 taskId, address trainer);
    error TaskMarketQuorumNotReached(uint256 taskId, uint16 revealed, uint16 required);
    error TaskMarketPayoutExceedsBudget(uint256 taskId, uint256 payout, uint256 budget);
    /// @dev A trainer in `rejected` (or `nonRevealers`) was already slashed or listed twice.
    error TaskMarketAlreadyRejected(uint256 taskId, address trainer);
    /// @dev Every committer that did not reveal must be slashed: `listed` of `expected` were.
    error TaskMarketNonRevealersMismatch(uint256 taskId, uint16 listed, uint16 expected);
    /// @dev An account listed in `nonRevealers` did reveal.
    error TaskMarketRevealed(uint256 taskId, address trainer);
    /// @dev Neither quorum failure nor an expired settlement grace period allows an abort yet.
    error TaskMarketAbortNotAllowed(uint256 taskId, uint256 allowedAt);
    error TaskMarketInvalidProof(uint256 taskId, address account, uint256 cumulativeAmount);
    error TaskMarketNothingToClaim(uint256 taskId, address account);
    /// @dev A claim would pay out more than the coordinator ever allocated in this task.
    error TaskMarketClaimExceedsAllocation(uint256 taskId, uint256 amount, uint256 unclaimed);

    // ---------------------------------------------------------------- events

    event TaskCreated(uint256 indexed taskId, address indexed owner, address indexed coordinator, TaskTerms terms);
    event TaskCancelled(uint256 indexed taskId, uint256 refund);
    event TaskCompleted(uint256 indexed taskId, uint256 refund);
    event TaskExpired(uint256 indexed taskId, uint256 refund);
    event TrainerJoined(uint256 indexed taskId, address indexed trainer, uint256 stake);
    event TrainerLeft(uint256 indexed taskId, address indexed trainer, uint256 stake);
    event StakeWithdrawn(uint256 indexed taskId, address indexed trainer, uint256 amount);
    event RoundStarted(
        uint256 indexed taskId, uint16 indexed round, bytes32 modelHash, uint64 commitDeadline, uint64 revealDeadline
    );
    event Committed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, bytes32 commitment);
    event Revealed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, bytes32 updateHash);
    event TrainerSlashed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, uint256 amount);
    event RoundFinalized(
        uint256 indexed taskId,
        uint16 indexed round,
        bytes32 newModelHash,
        bytes32 rewardsRoot,
        uint256 payout,
        bytes32 reportHash,
        uint16 rejectedCount
    );
    event RoundAborted(uint256 indexed taskId, uint16 indexed round, uint16 slashedCount);
    event RewardsClaimed(uint256 indexed taskId, address indexed account, uint256 amount, uint256 cumulativeAmount);

    // ---------------------------------------------------------------- tasks

    /**
     * @notice Posts a task funded by the caller, who becomes its owner.
     * @dev Requirements: valid terms; the caller approved `terms.rewardPool` tokens; not paused.
     * Emits {TaskCreated}.
     */
    function createTask(TaskTerms calldata terms) external returns (uint256 taskId);

    /**
     * @notice Posts a task on behalf of `owner`, relayed by anyone. The owner's EIP-712 signature
     * over `CreateTask(TaskTerms terms,address owner,uint256 nonce,uint256 deadline)` binds every
     * term and the owner's next nonce, so a relayer can neither alter a term nor replay it. The
     * permit funds the pool; a permit that was already used (front-run) is tolerated when the
     * allowance is in place.
     * @dev Requirements: `block.timestamp <= deadline`; signature by `owner`; valid terms; not paused.
     * Emits {TaskCreated}.
     */
    function createTaskFor(
        TaskTerms calldata terms,
        address owner,
        uint256 deadline,
        bytes calldata ownerSignature,
        Permit calldata permit
    ) external returns (uint256 taskId);

    /**
     * @notice Cancels a task before its first round and refunds the pool to the owner.
     * Joined trainers take their stake back with {withdrawStake}.
     * @dev Requirements: caller is the owner; task open; no round started. Emits {TaskCancelled}.
     */
    function cancelTask(uint256 taskId) external;

    /**
     * @notice Ends a task whose next round was not started within the settlement grace period
     * after the previous round's reveal deadline (a coordinator gone, or too few trainers left),
     * and refunds what is left of the pool to the owner. Claims and stake withdrawals stay open.
     * @dev Requirements: task open; at least one round started and the current one closed; the
     * grace period passed. Anyone may call it. Emits {TaskExpired}.
     */
    function expireTask(uint256 taskId) external;

    // ---------------------------------------------------------------- trainers

    /**
     * @notice Stakes `minStake` tokens and joins the task.
     * @dev Requirements: task open with rounds left; not joined; fewer than `maxTrainers` joined;
     * allowance for `minStake`; not paused. Emits {TrainerJoined}.
     */
    function join(uint256 taskId) external;

    /**
     * @notice Leaves an open task and takes the whole stake back.
     * @dev Requirements: joined; no commitment in a round that is still open. Emits {TrainerLeft}.
     */
    function leave(uint256 taskId) external;

    /**
     * @notice Takes back the stake left after being rejected, or after the task ended.
     * @dev Requirements: a stake; not joined, or the task completed or cancelled. Emits {StakeWithdrawn}.
     */
    function withdrawStake(uint256 taskId) external;

    // ---------------------------------------------------------------- rounds

    /**
     * @notice Opens the next round's commit phase on the global model `modelHash`.
     * @dev Requirements: caller is the coordinator; task open (so rounds are left: closing the
     * last round completes the task); previous round closed; at least `minTrainers` joined; not
     * paused. Emits {RoundStarted}.
     */
    function startRound(uint256 taskId, bytes32 modelHash) external;

    /**
     * @notice Commits to an update: `commitment = keccak256(abi.encode(taskId, round, trainer,
     * updateHash, salt))`. The last joined trainer to commit opens the reveal phase at once.
     * @dev Requirements: joined; phase Commit; not committed this round; not paused. Emits {Committed}.
     */
    function commit(uint256 taskId, bytes32 commitment) external;

    /**
     * @notice Reveals the update hash committed to in the current round. The last committer to
     * reveal opens the settling phase at once.
     * @dev Requirements: phase Reveal; committed and not revealed this round; the commitment
     * matches. Works while paused, so that a pause never gets a trainer slashed. Emits {Revealed}.
     */
    function reveal(uint256 taskId, bytes32 updateHash, bytes32 salt) external;

    /**
     * @notice Settles the current round. `rewardsRoot` commits to every trainer's cumulative
     * earnings in this task; `roundPayout` moves from the pool to the claimable rewards and may not
     * exceed the round budget (pool, including this round's slashes, divided by the rounds left).
     * Every account in `rejected` must have committed this round; its stake is cut by `slashBps`
     * into the pool and it is removed from the task. Every committer that did not reveal must be
     * in `rejected`. Cost grows with `rejected` only, never with the number of honest trainers.
     * After the last round, what is left of the pool is refunded to the owner.
     * @dev Requirements: caller is the coordinator; phase Settling; quorum revealed; not paused.
     * Emits {TrainerSlashed} per rejected trainer, {RoundFinalized}, and {TaskCompleted} after the last round.
     */
    function finalizeRound(
        uint256 taskId,
        bytes32 newModelHash,
        bytes32 rewardsRoot,
        uint256 roundPayout,
        bytes32 reportHash,
        address[] calldata rejected
    ) external;

    /**
     * @notice Closes a round that cannot be settled: anyone may call it once the phase is Settling
     * and fewer than `minTrainers` revealed, or once the settlement grace period after the reveal
     * deadline has passed. `nonRevealers` must list exactly the committers that did not reveal;
     * they are slashed. The round's budget stays in the pool.
     * @dev Requirements: see above; not paused. Emits {TrainerSlashed} per non-revealer,
     * {RoundAborted}, and {TaskCompleted} after the last round.
     */
    function abortRound(uint256 taskId, address[] calldata nonRevealers) external;

    // ---------------------------------------------------------------- rewards

    /**
     * @notice Pays the caller `cumulativeAmount` minus what it already claimed in this task.
     * `proof` shows the leaf `keccak256(bytes.concat(keccak256(abi.encode(caller, cumulativeAmount))))`
     * is in the task's current rewards root (OpenZeppelin StandardMerkleTree).
     * @dev Requirements: valid proof; something left to claim. Emits {RewardsClaimed}.
     */
    function claim(uint256 taskId, uint256 cumulativeAmount, bytes32[] calldata proof) external;

    // ---------------------------------------------------------------- views

    function token() external view returns (address);

    function taskCount() external view returns (uint256);

    function getTask(uint256 taskId) external view returns (TaskTerms memory terms, TaskState memory state);

    function getRound(uint256 taskId, uint16 round) external view returns (Round memory);

    /// @notice The phase of the task's current round, taking the clock and early closes into account.
    function roundPhase(uint256 taskId) external view returns (RoundPhase);

    function getTrainer(uint256 taskId, address trainer) external view returns (Trainer memory);

    /// @notice The trainer's latest commitment (round, hash) and whether it was revealed.
    function getCommitment(uint256 taskId, address trainer)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed);

    /// @notice Rewards the account claimed so far in the task.
    function claimedOf(uint256 taskId, address account) external view returns (uint256);

    /// @notice Budget the current round may pay out if it were finalized now, before its slashes.
    function roundBudget(uint256 taskId) external view returns (uint256);

    /// @notice Seconds after the reveal deadline during which only the coordinator may settle.
    function settlementGrace() external view returns (uint256);

    /// @notice The EIP-712 digest an owner signs to have `terms` posted by a relayer.
    function hashTaskTerms(TaskTerms calldata terms, address owner, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32);

    /// @notice The next nonce an owner's signature over task terms must carry.
    function nonces(address owner) external view returns (uint256);
}
