// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title ITaskMarket
 * @notice A market for federated-learning tasks. A task owner locks a reward pool; trainers stake
 * to join and train; validators stake, commit to the hash of their own held-out data, and score
 * every round's updates on it. Nobody alone decides pay: the contract computes each round's
 * consensus from the validators' revealed score vectors and pays from it.
 *
 * Money held always equals: open reward pools + trainer stakes + validator stakes + claimable
 * rewards. Slashed stake is burned (sent to {BURN_ADDRESS}): paid to anyone, it would pay
 * whoever can cause a slash (an owner, a coordinator withholding uploads, a colluding quorum).
 *
 * Round life cycle (see {roundPhase}); each phase closes early once everyone expected acted, and
 * the later deadlines move up with it:
 *   Commit       from {startRound}: joined trainers commit to the hash of their update;
 *   Reveal       committers reveal the hash (the blob is in the content store);
 *   ScoreCommit  joined validators commit to the hash of their score vector over the revealers;
 *   ScoreReveal  they reveal the vector;
 *   Settling     until {finalizeRound} (anyone, both quorums reached) or {abortRound} (anyone, a
 *                quorum missed). The coordinator then publishes the aggregate with {publishModel};
 *   Finalized / Aborted afterwards. Every round uses up one of the task's rounds; the last one
 *                refunds what is left of the pool to the owner.
 * A task whose coordinator stops starting rounds can be expired by anyone (see {expireTask}).
 *
 * Seats: a trainer joined when a round starts is bound to it. One that neither commits nor leaves
 * during its commit phase loses its seat when the round closes and is charged `slashBps` of
 * `minStake`, burned ({TrainersUnseated}); a seat cannot be held without taking part.
 *
 * Consensus (computed in {finalizeRound}; `fedmarket.consensus` mirrors it bit for bit). Let T be
 * the round's revealers and V the validators that revealed, both in ascending address order, s[v][i]
 * validator v's entry for trainer i, w[v] its stake; a validator's entry for itself is ignored
 * throughout. An entry is a score or one of the flags UNAVAILABLE, INVALID, HARMFUL.
 *   n[v][i] = max(s[v][i], 0) * 1e18 / sum_j max(s[v][j], 0)   (0 for a flag; 0 if the sum is 0)
 *   trainer i is Unavailable if every validator flagged it UNAVAILABLE (neither paid nor slashed);
 *   Rejected if validators holding more than half of the stake flagged it INVALID or HARMFUL
 *   (slashed by `slashBps` and removed); otherwise its consensus c[i] is the stake-weighted
 *   median of n[v][i] over validators that did not flag it UNAVAILABLE (flags count as 0): the
 *   smallest value whose cumulative stake reaches half. c[i] > 0: Accepted, else Worthless.
 *   Trainers: budget * (1 - validatorShareBps) split in proportion to c[i]. No base share.
 *   Validators: agreement a[v] = sum_i min(n[v][i], c[i]) / sum_i c[i] (Yuma clipping; 1e18 when
 *   the sum is 0); those with a[v] >= MIN_AGREEMENT split budget * validatorShareBps in
 *   proportion to a[v]. A validator that committed scores and did not reveal them is slashed.
 * What nobody earns stays in the pool.
 *
 * Constants (public on TaskMarket): MAX_TRAINERS and MAX_VALIDATORS cap `maxTrainers` and
 * `maxValidators`, and so every list a settlement takes (its cost); MAX_WINDOW = 7 days caps each
 * phase window; MAX_SCORE = 2**128 - 1; MIN_AGREEMENT =
 * 5e17; the flags SCORE_UNAVAILABLE = type(int256).min, SCORE_INVALID = min + 1, SCORE_HARMFUL =
 * min + 2; BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD. Each early close sets its
 * phase's deadline to the current time; the later phases then follow back to back, each for its
 * window.
 */
interface ITaskMarket {
    /// @notice Everything a task owner commits to when posting a task. Signed as EIP-712 data.
    struct TaskTerms {
        bytes32 specHash; // sha256 of the task spec JSON in the content store
        address coordinator; // the only account allowed to start rounds and publish models
        uint16 rounds; // number of rounds; each round gets pool / rounds left as its budget
        uint16 minTrainers; // quorum: revealed updates needed to finalize a round
        uint16 maxTrainers; // most trainers joined at once (at most MAX_TRAINERS)
        uint16 slashBps; // share of stake slashed (burned) for a rejected update, a missed reveal or a lost seat
        uint32 commitWindow; // seconds, 1 ..= MAX_WINDOW
        uint32 revealWindow; // seconds, 1 ..= MAX_WINDOW
        uint256 rewardPool; // tokens locked by the owner
        uint256 minStake; // tokens a trainer stakes to join
        uint16 minValidators; // quorum: revealed score vectors needed to finalize a round
        uint16 maxValidators; // most validators joined at once (at most MAX_VALIDATORS)
        uint16 validatorShareBps; // share of each round's budget for validators, basis points
        uint32 scoreWindow; // seconds for score commits, 1 ..= MAX_WINDOW
        uint32 scoreRevealWindow; // seconds for score reveals, 1 ..= MAX_WINDOW
        uint256 minValidatorStake; // least tokens a validator stakes to join
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
        ScoreCommit,
        ScoreReveal,
        Settling,
        Finalized,
        Aborted
    }

    /// @notice What consensus made of a revealed update.
    enum Outcome {
        Accepted, // consensus value > 0: paid, and in the round's aggregate
        Worthless, // consensus value 0: neither paid nor slashed
        Unavailable, // no validator could fetch it: neither paid nor slashed
        Rejected // a stake majority flagged it invalid or harmful: slashed and removed
    }

    /// @notice Mutable state of a task. `currentRound` counts rounds started (1-based).
    struct TaskState {
        address owner;
        TaskStatus status;
        uint16 currentRound;
        uint16 trainerCount;
        uint16 validatorCount;
        uint96 pool; // reward tokens not yet allocated
        uint96 unclaimed; // allocated to trainers and validators, not yet claimed
        bytes32 modelHash; // sha256 of the global model the next round trains on
    }

    struct Round {
        uint64 commitDeadline;
        uint64 revealDeadline;
        uint64 scoreCommitDeadline;
        uint64 scoreRevealDeadline;
        uint16 commitCount;
        uint16 revealCount;
        uint16 scoreCommitCount;
        uint16 scoreRevealCount;
        bool closed;
        bool aborted;
        bool modelPublished; // the coordinator published this round's aggregate
        uint64 closedAt; // when it was finalized or aborted
        uint96 payout; // tokens allocated in this round (trainers and validators)
        bytes32 modelHash; // global model trained on in this round
        bytes32 newModelHash; // aggregate of this round's accepted updates (set by {publishModel})
        bytes32 reportHash; // sha256 of the coordinator's round report (set by {publishModel})
    }

    struct Trainer {
        uint96 stake;
        uint96 claimable; // earned, not yet claimed
        uint16 lastCommitRound;
        uint16 lastRevealRound;
        bool joined;
    }

    struct Validator {
        uint96 stake;
        uint96 claimable; // earned, not yet claimed
        uint16 lastScoreCommitRound;
        uint16 lastScoreRevealRound;
        bool joined;
        bytes32 dataHash; // sha256 of its canonical validation file, fixed at join
    }

    /// @notice The revealed inputs of a round's consensus, rebuilt by anyone from the events.
    struct Settlement {
        address[] trainers; // every revealer of the round, ascending
        address[] nonRevealers; // every committer that did not reveal (slashed)
        address[] validators; // every validator that revealed scores, ascending
        int256[][] scores; // scores[v]: validators[v]'s revealed vector, one entry per trainer
        address[] silentValidators; // every validator that committed scores and did not reveal (slashed)
    }

    // ---------------------------------------------------------------- errors

    /// @dev A term of a task is out of range; `field` names it.
    error TaskMarketInvalidTerms(string field);
    /// @dev Phase window `field` is longer than `maximum` (MAX_WINDOW) seconds.
    error TaskMarketWindowTooLong(string field, uint256 window, uint256 maximum);
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
    /// @dev A joined trainer or validator of an open task takes its stake back by leaving.
    error TaskMarketStillJoined(uint256 taskId, address account);
    /// @dev The trainer committed in a round that is not closed yet (it may leave only while paused).
    error TaskMarketOpenCommitment(uint256 taskId, address trainer, uint16 round);
    error TaskMarketNothingToWithdraw(uint256 taskId, address account);
    error TaskMarketNotEnoughTrainers(uint256 taskId, uint16 joined, uint16 required);
    error TaskMarketNotEnoughValidators(uint256 taskId, uint16 joined, uint16 required);
    /// @dev The coordinator may still start the next round until `expiresAt`.
    error TaskMarketNotExpired(uint256 taskId, uint256 expiresAt);
    error TaskMarketWrongPhase(uint256 taskId, RoundPhase phase);
    error TaskMarketAlreadyCommitted(uint256 taskId, address trainer, uint16 round);
    error TaskMarketNotCommitted(uint256 taskId, address trainer, uint16 round);
    error TaskMarketAlreadyRevealed(uint256 taskId, address trainer, uint16 round);
    error TaskMarketCommitmentMismatch(uint256 taskId, address trainer);
    error TaskMarketQuorumNotReached(uint256 taskId, uint16 revealed, uint16 required);
    error TaskMarketValidatorQuorumNotReached(uint256 taskId, uint16 revealed, uint16 required);
    /// @dev Both quorums were reached: the round must be finalized, not aborted.
    error TaskMarketAbortNotAllowed(uint256 taskId);
    /// @dev Within the settlement grace after an unpause only the coordinator may abort, until `allowedAt`.
    error TaskMarketAbortTooEarly(uint256 taskId, uint256 allowedAt);
    /// @dev A trainer listed for slashing was already slashed or listed twice.
    error TaskMarketAlreadyRejected(uint256 taskId, address trainer);
    /// @dev Every committer that did not reveal must be slashed: `listed` of `expected` were.
    error TaskMarketNonRevealersMismatch(uint256 taskId, uint16 listed, uint16 expected);
    /// @dev An account listed in `nonRevealers` did reveal.
    error TaskMarketRevealed(uint256 taskId, address trainer);
    error TaskMarketNothingToClaim(uint256 taskId, address account);
    // validators
    error TaskMarketValidatorsFull(uint256 taskId, uint16 maxValidators);
    error TaskMarketAlreadyValidator(uint256 taskId, address validator);
    error TaskMarketNotValidator(uint256 taskId, address validator);
    error TaskMarketStakeTooLow(uint256 taskId, uint256 stake, uint256 minimum);
    error TaskMarketInvalidDataHash(uint256 taskId);
    /// @dev The validator committed scores in a round that is not closed yet (it may leave only while paused).
    error TaskMarketOpenScoreCommitment(uint256 taskId, address validator, uint16 round);
    error TaskMarketScoresAlreadyCommitted(uint256 taskId, address validator, uint16 round);
    error TaskMarketScoresNotCommitted(uint256 taskId, address validator, uint16 round);
    error TaskMarketScoresAlreadyRevealed(uint256 taskId, address validator, uint16 round);
    error TaskMarketScoreCommitmentMismatch(uint256 taskId, address validator);
    /// @dev A score vector needs one entry per revealer of the round (and a settlement one vector
    /// per listed validator).
    error TaskMarketScoreCountMismatch(uint256 taskId, uint256 given, uint256 expected);
    /// @dev Entry `index` is neither a flag nor a score within +-MAX_SCORE.
    error TaskMarketScoreOutOfRange(uint256 taskId, uint256 index);
    // settlement inputs
    /// @dev `list` ("trainers", "validators") is not in strictly ascending address order.
    error TaskMarketUnsorted(uint256 taskId, string list);
    /// @dev A listed trainer did not reveal in this round.
    error TaskMarketNotARevealer(uint256 taskId, address trainer);
    /// @dev `trainers` must hold every revealer: `listed` of `expected`.
    error TaskMarketRevealersMismatch(uint256 taskId, uint16 listed, uint16 expected);
    /// @dev A listed validator did not reveal scores in this round, or its vector differs from the revealed one.
    error TaskMarketScoresMismatch(uint256 taskId, address validator);
    /// @dev `validators` must hold every score revealer: `listed` of `expected`.
    error TaskMarketScoreRevealersMismatch(uint256 taskId, uint16 listed, uint16 expected);
    /// @dev A listed silent validator did reveal, did not commit, or is listed twice.
    error TaskMarketNotSilent(uint256 taskId, address validator);
    /// @dev Every validator that committed and did not reveal must be slashed: `listed` of `expected`.
    error TaskMarketSilentValidatorsMismatch(uint256 taskId, uint16 listed, uint16 expected);
    // models
    /// @dev The next round must train on the model published for the last finalized round.
    error TaskMarketModelMismatch(uint256 taskId, bytes32 expected, bytes32 given);
    /// @dev The last finalized round's aggregate has not been published yet.
    error TaskMarketModelNotPublished(uint256 taskId, uint16 round);
    error TaskMarketModelAlreadyPublished(uint256 taskId, uint16 round);

    // ---------------------------------------------------------------- events

    event TaskCreated(uint256 indexed taskId, address indexed owner, address indexed coordinator, TaskTerms terms);
    event TaskCancelled(uint256 indexed taskId, uint256 refund);
    event TaskCompleted(uint256 indexed taskId, uint256 refund);
    event TaskExpired(uint256 indexed taskId, uint256 refund);
    event TrainerJoined(uint256 indexed taskId, address indexed trainer, uint256 stake);
    event TrainerLeft(uint256 indexed taskId, address indexed trainer, uint256 stake);
    event ValidatorJoined(uint256 indexed taskId, address indexed validator, uint256 stake, bytes32 dataHash);
    event ValidatorLeft(uint256 indexed taskId, address indexed validator, uint256 stake);
    event StakeWithdrawn(uint256 indexed taskId, address indexed account, uint256 amount);
    event RoundStarted(
        uint256 indexed taskId, uint16 indexed round, bytes32 modelHash, uint64 commitDeadline, uint64 revealDeadline
    );
    event Committed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, bytes32 commitment);
    event Revealed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, bytes32 updateHash);
    event ScoresCommitted(uint256 indexed taskId, uint16 indexed round, address indexed validator, bytes32 commitment);
    event ScoresRevealed(uint256 indexed taskId, uint16 indexed round, address indexed validator, int256[] scores);
    /// @notice Consensus for one revealed update: `consensus` is c[i] (1e18 = the whole round's value).
    event TrainerSettled(
        uint256 indexed taskId,
        uint16 indexed round,
        address indexed trainer,
        Outcome outcome,
        uint256 consensus,
        uint256 payout
    );
    /// @notice `agreement` is a[v] (1e18 = full agreement with consensus).
    event ValidatorSettled(
        uint256 indexed taskId, uint16 indexed round, address indexed validator, uint256 agreement, uint256 payout
    );
    event TrainerSlashed(uint256 indexed taskId, uint16 indexed round, address indexed trainer, uint256 amount);
    event ValidatorSlashed(uint256 indexed taskId, uint16 indexed round, address indexed validator, uint256 amount);
    event RoundFinalized(
        uint256 indexed taskId, uint16 indexed round, uint256 trainerPayout, uint256 validatorPayout, uint256 burned
    );
    event RoundAborted(uint256 indexed taskId, uint16 indexed round, uint16 slashedCount, uint256 burned);
    /// @notice `count` trainers bound to the round did not commit: their seats are free and
    /// `charged` (count x `slashBps` of `minStake`) is burned. Emitted by the closing settlement, or
    /// by {leave} for one that leaves after the commit phase.
    event TrainersUnseated(uint256 indexed taskId, uint16 indexed round, uint16 count, uint256 charged);
    event ModelPublished(uint256 indexed taskId, uint16 indexed round, bytes32 modelHash, bytes32 reportHash);
    event RewardsClaimed(uint256 indexed taskId, address indexed account, uint256 amount);

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
     * Joined trainers and validators take their stake back with {withdrawStake}.
     * @dev Requirements: caller is the owner; task open; no round started. Emits {TaskCancelled}.
     */
    function cancelTask(uint256 taskId) external;

    /**
     * @notice Ends a task whose next round was not started within the settlement grace period
     * after the previous round closed, or after the last unpause if that came later (a
     * coordinator gone, or too few trainers left), and refunds what is left of the pool to the
     * owner. Claims and stake withdrawals stay open.
     * @dev Requirements: task open; at least one round started and the current one closed; the
     * grace period passed; not paused. Anyone may call it. Emits {TaskExpired}.
     */
    function expireTask(uint256 taskId) external;

    // ---------------------------------------------------------------- trainers

    /**
     * @notice Stakes `minStake` tokens and joins the task as a trainer, bound to every round that
     * starts from now on (see Seats above). A trainer whose seat was lost may join again.
     * @dev Requirements: task open; not joined; not still in an open round it left during a pause;
     * fewer than `maxTrainers` joined; allowance for `minStake`; not paused. Emits {TrainerJoined}.
     */
    function join(uint256 taskId) external;

    /**
     * @notice Leaves the task as a trainer and takes the stake back: all of it, except after the
     * commit phase of a round it is bound to and did not commit in (the seat charge is burned,
     * {TrainersUnseated}). A committer of an open round may leave only while the market is paused;
     * what a slash could take (`slashBps` of its stake) then stays at stake until the round
     * closes, and the round settles it as before (it can still reveal).
     * @dev Requirements: joined; no commitment in a round that is still open, unless paused.
     * Emits {TrainerLeft} with the amount paid.
     */
    function leave(uint256 taskId) external;

    // ---------------------------------------------------------------- validators

    /**
     * @notice Stakes `stake` (at least `minValidatorStake`) and joins as a validator that scores
     * on the data whose sha256 is `dataHash`, for good: another split is another validator.
     * A trainer of the task may also validate; its score for itself is ignored.
     * @dev Requirements: task open; not a validator; fewer than `maxValidators` joined; non-zero
     * `dataHash`; allowance; not paused. Emits {ValidatorJoined}.
     */
    function joinAsValidator(uint256 taskId, bytes32 dataHash, uint256 stake) external;

    /**
     * @notice Leaves the task as a validator and takes the whole stake back. A score committer of
     * an open round may leave only while paused, and leaves `slashBps` of its stake (its weight
     * in that round's consensus) until the round closes.
     * @dev Requirements: joined; no score commitment in a round that is still open, unless paused.
     * Emits {ValidatorLeft} with the amount paid.
     */
    function leaveValidator(uint256 taskId) external;

    /**
     * @notice Commits to a score vector: `commitment = keccak256(abi.encode(taskId, round,
     * validator, scores, salt))`, `scores` an `int256[]` with one entry per revealer in ascending
     * address order. The last joined validator to commit opens the score-reveal phase at once.
     * @dev Requirements: joined validator; phase ScoreCommit; not committed this round. Works while
     * paused. Emits {ScoresCommitted}.
     */
    function commitScores(uint256 taskId, bytes32 commitment) external;

    /**
     * @notice Reveals the committed score vector. Each entry is a score within +-MAX_SCORE or a
     * flag (UNAVAILABLE, INVALID, HARMFUL). The last committer to reveal opens Settling at once.
     * @dev Requirements: phase ScoreReveal; committed and not revealed this round; one entry per
     * revealer; the commitment matches. Works while paused. Emits {ScoresRevealed}.
     */
    function revealScores(uint256 taskId, int256[] calldata scores, bytes32 salt) external;

    // ---------------------------------------------------------------- both roles

    /**
     * @notice Takes back every stake the caller has left in the task: after being rejected,
     * slashed or unseated, or after the task ended.
     * @dev Requirements: a stake; not joined in an open task; not left during a pause from a round
     * still open. Emits {StakeWithdrawn}.
     */
    function withdrawStake(uint256 taskId) external;

    /**
     * @notice Pays the caller everything it earned in the task, as trainer and as validator.
     * @dev Requirements: something to claim. Emits {RewardsClaimed}.
     */
    function claim(uint256 taskId) external;

    // ---------------------------------------------------------------- rounds

    /**
     * @notice Opens the next round's commit phase on the global model `modelHash`: any model for
     * the first round, afterwards exactly the one the task's state holds (published for the last
     * finalized round, unchanged after an aborted one).
     * @dev Requirements: caller is the coordinator; task open; previous round closed and, if
     * finalized, its model published; at least `minTrainers` trainers and `minValidators`
     * validators joined; not paused. Emits {RoundStarted}.
     */
    function startRound(uint256 taskId, bytes32 modelHash) external;

    /**
     * @notice Commits to an update: `commitment = keccak256(abi.encode(taskId, round, trainer,
     * updateHash, salt))`. The last joined trainer to commit opens the reveal phase at once.
     * @dev Requirements: joined (seat not lost); phase Commit; not committed this round. Works
     * while paused, so that a pause never costs a bound trainer its seat. Emits {Committed}.
     */
    function commit(uint256 taskId, bytes32 commitment) external;

    /**
     * @notice Reveals the update hash committed to in the current round. The last committer to
     * reveal opens the score-commit phase at once.
     * @dev Requirements: phase Reveal; committed and not revealed this round; the commitment
     * matches. Works while paused, so that a pause never gets a trainer slashed. Emits {Revealed}.
     */
    function reveal(uint256 taskId, bytes32 updateHash, bytes32 salt) external;

    /**
     * @notice Settles the current round from its revealed inputs (see the consensus above), which
     * anyone can rebuild from the events: pays, slashes and burns. Permissionless: the money never
     * waits for the coordinator. Cost is bounded by MAX_TRAINERS x MAX_VALIDATORS.
     * @dev Requirements: phase Settling; both quorums reached; `s` complete and sorted as
     * documented in {Settlement}; not paused. Emits {TrainerSettled} per revealer,
     * {ValidatorSettled} per score revealer, {TrainerSlashed}/{ValidatorSlashed} per slash,
     * {TrainersUnseated} when bound trainers did not commit, {RoundFinalized} (`burned` counts the
     * slashes and the seat charges), and {TaskCompleted} after the last round.
     */
    function finalizeRound(uint256 taskId, Settlement calldata s) external;

    /**
     * @notice Closes a round that missed a quorum (fewer than `minTrainers` reveals or
     * `minValidators` score reveals); anyone may call it once the phase is Settling, except that
     * for a settlement grace after an unpause only the coordinator may. The listed non-revealers
     * and silent validators must be exactly those of the round; they are slashed. Bound trainers
     * that did not commit lose their seats, as in {finalizeRound}. The round's budget stays in the
     * pool and the model is unchanged.
     * @dev Requirements: see above; not paused. Emits the slash events, {TrainersUnseated},
     * {RoundAborted}, and {TaskCompleted} after the last round.
     */
    function abortRound(uint256 taskId, address[] calldata nonRevealers, address[] calldata silentValidators)
        external;

    /**
     * @notice Publishes the aggregate of the last finalized round's Accepted updates under the
     * task's rule (anyone can recompute it from the blobs) and the round report's hash.
     * @dev Requirements: caller is the coordinator; the task's latest round is finalized and its
     * model not yet published. Works after the last round too. Emits {ModelPublished}.
     */
    function publishModel(uint256 taskId, bytes32 modelHash, bytes32 reportHash) external;

    // ---------------------------------------------------------------- views

    function token() external view returns (address);

    function taskCount() external view returns (uint256);

    function getTask(uint256 taskId) external view returns (TaskTerms memory terms, TaskState memory state);

    function getRound(uint256 taskId, uint16 round) external view returns (Round memory);

    /// @notice The phase of the task's current round, taking the clock and early closes into account.
    function roundPhase(uint256 taskId) external view returns (RoundPhase);

    function getTrainer(uint256 taskId, address trainer) external view returns (Trainer memory);

    function getValidator(uint256 taskId, address validator) external view returns (Validator memory);

    /// @notice The trainer's latest commitment (round, hash) and whether it was revealed.
    function getCommitment(uint256 taskId, address trainer)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed);

    /// @notice The validator's latest score commitment (round, hash) and whether it was revealed;
    /// once revealed, `commitment` is `keccak256(abi.encode(scores))`.
    function getScoreCommitment(uint256 taskId, address validator)
        external
        view
        returns (uint16 round, bytes32 commitment, bool revealed);

    /// @notice Budget the current round may pay out if it were finalized now.
    function roundBudget(uint256 taskId) external view returns (uint256);

    /// @notice Seconds after a round closed during which the coordinator may start the next one
    /// before anyone may {expireTask}.
    function settlementGrace() external view returns (uint256);

    /// @notice The EIP-712 digest an owner signs to have `terms` posted by a relayer.
    function hashTaskTerms(TaskTerms calldata terms, address owner, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32);

    /// @notice The next nonce an owner's signature over task terms must carry.
    function nonces(address owner) external view returns (uint256);
}
