/**
 * Batches of agent tasks that survive a crash and spread over machines, on Effect's own durable
 * engine: `@effect/workflow` on `@effect/cluster` (sharding, runners, SQL message storage). A
 * batch is cut by position into units of a few tasks (`unitSize`, 8), each a workflow keyed by
 * its batch and unit (so submitting it twice runs it once), whose body runs each task that has
 * no record yet through the `AgentService` (in one task window per worker, `AgentService.window`,
 * as `processAll` runs a batch: a task's deadline starts when its turn comes): every policy
 * (retry, breaker, token budget, coalescing, fallback) works inside it as it does in one
 * process. Each task is still its own idempotent unit of work in {@link TaskStore}, keyed by
 * batch and task id: recorded once, and skipped when its unit runs again. Units of several tasks share the engine's work per message
 * (stored, delivered, answered; measured on PostgreSQL: the workers' CPU a task 10.9 ms with a
 * unit a task, 6.0 ms with 8, the submitter's 6.3 against 2.7 ms). The body is not wrapped in
 * an `Activity`: a unit run again after a crash does what a journaled activity would (the cut-off
 * calls again, at least once), and an activity's own message and reply doubled the engine's
 * work (17 against 10 ms of CPU a task, measured). The cluster queues the units, spreads them
 * over the runners of the store, and, when a runner dies, moves its units to another.
 *
 * - **At least once.** A model call cut off by a crash is made again: the unit starts over on
 *   the next runner (or the next run, on SQLite). Its record says so: `recovered: true`, and its
 *   `attempts` count the calls of every run, the cut-off ones included. Those are counted by
 *   {@link journal}, a layer around the model that notes each call in the store as it begins
 *   (without it, a record cannot tell). A call whose answer was stored is never made again: the
 *   record is written once, and a unit that finds one ends without a call. Use a provider-side
 *   idempotency key if a repeated call must not be billed twice.
 * - **Results** come as a `Stream` of `TaskResult`s as they are stored, by whichever runner ran
 *   them: the ones stored before the stream started first, then each new one, until every task
 *   of the batch has one.
 * - **Where to run**: give the layers a `WorkflowEngine` and a `SqlClient`: `SqliteStore.layer`
 *   (one process, a file) or `PgStore.layer` (any number of processes on one PostgreSQL). Add
 *   {@link worker} (and an `AgentService`) in the processes that do the work.
 *
 * @example
 * ```ts
 * import { Effect, Layer, Stream } from "effect"
 * import { AgentService, AgentTask, EmbeddedModel } from "wiz-effect"
 * import * as DurableBatch from "wiz-effect/durable/DurableBatch"
 * import * as SqliteStore from "wiz-effect/durable/SqliteStore"
 *
 * const tasks = [new AgentTask.AgentTask({ id: "t1", prompt: "Summarise: Effect is a TypeScript library." })]
 * const program = Effect.gen(function* () {
 *   const batches = yield* DurableBatch.DurableBatch
 *   const id = yield* batches.submit(tasks) // derived from the tasks: the same tasks, the same batch
 *   return yield* Stream.runCollect(batches.results(id))
 * })
 * const store = SqliteStore.layer({ filename: "wiz.db" })
 * const work = DurableBatch.worker({ runner: "local" }).pipe(
 *   Layer.provide(AgentService.layer({ concurrency: 8 })),
 *   Layer.provide(DurableBatch.journal),
 *   Layer.provide(EmbeddedModel.layer())
 * )
 * program.pipe(Effect.provide(Layer.merge(DurableBatch.layer(), work).pipe(Layer.provideMerge(store))))
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Entity from "@effect/cluster/Entity"
import * as Sharding from "@effect/cluster/Sharding"
import * as Socket from "@effect/platform/Socket"
import * as Workflow from "@effect/workflow/Workflow"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import { Chunk, Context, Duration, Effect, Exit, FiberRef, Layer, Option, Schedule, Schema, Stream } from "effect"
import { createHash } from "node:crypto"
import { AgentService } from "../agent/AgentService.js"
import { AgentTask, TaskResult } from "../agent/AgentTask.js"
import * as AiModel from "../model/AiModel.js"
import * as TaskStore from "./TaskStore.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  DuplicateTaskId,
  /**
   * @since 0.1.0
   * @category errors
   */
  StoreError
} from "./TaskStore.js"

export type {
  /**
   * @since 0.1.0
   * @category models
   */
  BatchState
} from "./TaskStore.js"

/**
 * A part of a batch submitted at a position that is not a multiple of `unitSize`: its
 * first tasks would join a unit already submitted with other tasks, and a unit runs once, so
 * they would never run. Nothing of the part is stored.
 *
 * @since 0.1.0
 * @category errors
 */
export class PartNotAligned extends Schema.TaggedError<PartNotAligned>()("PartNotAligned", {
  batchId: Schema.String,
  from: Schema.Number,
  unitSize: Schema.Number
}) {
  override get message(): string {
    return `batch "${this.batchId}": a part submitted from position ${this.from}, which is not a multiple of the unit size ${this.unitSize}`
  }
}

/**
 * No batch of that id was submitted to the store.
 *
 * @since 0.1.0
 * @category errors
 */
export class BatchNotFound extends Schema.TaggedError<BatchNotFound>()("BatchNotFound", {
  batchId: Schema.String
}) {
  override get message(): string {
    return `no batch "${this.batchId}" in the store`
  }
}

/**
 * A unit of a batch, as the cluster runs it: the tasks at positions `unit × unitSize` to
 * `(unit + 1) × unitSize - 1` of the batch, keyed by batch and unit, so it runs once however
 * often it is submitted (the units of a batch are the same in every submission: by position).
 * Each of its tasks is still recorded once, by batch and task id ({@link TaskStore}).
 *
 * @since 0.1.0
 * @category workflows
 */
export const UnitWorkflow = Workflow.make({
  name: "wiz/AgentTasks",
  payload: { batchId: Schema.String, unit: Schema.Number, tasks: Schema.Array(AgentTask) },
  error: TaskStore.StoreError,
  idempotencyKey: ({ batchId, unit }) => `${batchId}/${unit}`
})

/**
 * The id of a batch of these tasks: a hash of their ids, prompts and `maxTokens`, so the same
 * tasks submitted again (after a crash, from another machine) name the same batch.
 *
 * @since 0.1.0
 * @category constructors
 */
export const batchIdOf = (tasks: Iterable<AgentTask>): string => {
  const hash = createHash("sha256")
  for (const task of tasks) hash.update(JSON.stringify([task.id, task.prompt, task.maxTokens ?? null])).update("\n")
  return `b-${hash.digest("hex").slice(0, 16)}`
}

const encodeResult = Schema.encodeSync(TaskResult)
const decodeResult = Schema.decodeSync(TaskResult)

/** The record of a task whose earlier runs, cut off by a crash, began `callsBefore` calls. */
const recovered = (result: TaskResult, callsBefore: number): TaskResult =>
  decodeResult({ ...encodeResult(result), attempts: result.attempts + callsBefore, recovered: true })

/** Store errors are retried a few times before the unit fails with one. */
const storeRetry = Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(6)))

/**
 * Handing a unit to the runner that owns its shard, again after the socket to that runner
 * failed: a runner killed while units are handed to it fails the write with a `SocketError`,
 * which the cluster passes on as a defect instead of reading it as the runner being
 * unavailable (what it retries itself), and `wiz run` died of it. A unit is idempotent (its
 * key), so it is handed over again, every 0.1 s to 2 s, until the runner's shards have moved
 * (seconds), for a minute at most; then the defect is passed on as it came.
 */
const handOverRetry = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.jittered,
  Schedule.upTo("1 minute")
)

/**
 * What to do as a model call begins in the unit this fiber runs, if it runs one: note the call,
 * or interrupt the task before it calls when its unit is leaving this runner.
 */
const currentUnit = FiberRef.unsafeMake<Option.Option<Effect.Effect<void>>>(Option.none())

/**
 * The `AiModel` in context, with each call a durable unit makes noted in the store as it begins
 * (a call outside a unit is not noted): what lets a record after a crash count the calls its
 * cut-off runs made. Provide it between the model and the `AgentService` of a {@link worker}.
 *
 * @since 0.1.0
 * @category layers
 */
export const journal: Layer.Layer<AiModel.AiModel, never, AiModel.AiModel> = Layer.effect(
  AiModel.AiModel,
  Effect.map(AiModel.AiModel, (model) => {
    const noted = Effect.flatMap(FiberRef.get(currentUnit), Option.getOrElse(() => Effect.void))
    return {
      ...model,
      generate: (request) => Effect.zipRight(noted, model.generate(request)),
      stream: (request) => Stream.unwrap(Effect.as(noted, model.stream(request)))
    } satisfies AiModel.AiModel.Service
  })
)

/**
 * Run the batches' tasks in this process: registers {@link UnitWorkflow} with the engine, each
 * unit running its tasks through the `AgentService` in context (built on {@link journal}, for
 * its records to count the calls of runs a crash cut off). `runner` names this process in the
 * store (`wiz status` shows it).
 *
 * A unit that leaves this runner while it runs (its shard moves to a runner that joined, or
 * this one stops with SIGTERM) makes no new call: its calls on the wire finish and are
 * recorded, its tasks not yet calling stop before they call, and the unit is handed over
 * unfinished, for the next runner to run the tasks without a record. So a shard moving repeats
 * no call (the cluster waits for the unit up to its `entityTerminationTimeout`: give
 * `PgStore.layer` your attempt timeout as `longestCall`, so that wait covers the longest call
 * and no more).
 *
 * @since 0.1.0
 * @category layers
 */
export const worker = (options: {
  readonly runner: string
}): Layer.Layer<never, TaskStore.StoreError, WorkflowEngine | SqlClient.SqlClient | AgentService> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const store = yield* TaskStore.make
    // every unit's tasks in one window, as processAll's: a task's deadline starts when its turn
    // comes, not while it waits behind the other units' tasks
    const process = yield* Effect.flatMap(AgentService, (agent) => agent.window)
    // whether a unit is still this runner's: its shard held (false too once this runner stops)
    const sharding = yield* Effect.serviceOption(Sharding.Sharding)
    const isHere = Effect.map(Effect.serviceOption(Entity.CurrentAddress), (address) =>
      Option.isNone(sharding) || Option.isNone(address) || sharding.value.hasShardId(address.value.shardId))
    const answer = (batchId: string, task: AgentTask, callsBefore: number, leaving: Effect.Effect<void>) =>
      Effect.gen(function*() {
        // a call not noted is still made: the record may then count fewer calls than were made
        const called = Effect.retry(store.called(batchId, task.id, options.runner), storeRetry).pipe(
          Effect.catchAll((error) => Effect.logWarning(`wiz: task ${task.id}: a model call was not noted in the store: ${error.message}`))
        )
        const guarded = Effect.flatMap(isHere, (here) => (here ? called : Effect.zipRight(leaving, Effect.interrupt)))
        const result = yield* process(task).pipe(Effect.locally(currentUnit, Option.some(guarded)))
        const record = callsBefore > 0 ? recovered(result, callsBefore) : result
        yield* Effect.retry(store.finish(batchId, record), storeRetry)
      })
    const unit = (batchId: string, tasks: ReadonlyArray<AgentTask>) =>
      Effect.gen(function*() {
        const begun = yield* Effect.retry(store.begin(batchId, tasks.map((task) => task.id)), storeRetry)
        let left = false
        const leaving = Effect.sync(() => {
          left = true
        })
        const exits = yield* Effect.forEach(tasks, (task) => {
          const state = begun.get(task.id)
          return state === undefined || state._tag === "Recorded"
            ? Effect.exit(Effect.void)
            : Effect.exit(answer(batchId, task, state.callsBefore, leaving))
        }, { concurrency: "unbounded" })
        // handed over unfinished: the runner's shutdown of the unit interrupts it, unanswered
        if (left) return yield* Effect.never
        for (const exit of exits) if (Exit.isFailure(exit)) return yield* exit
      })
    return UnitWorkflow.toLayer(({ batchId, tasks }) => unit(batchId, tasks))
  }))

/**
 * Submit batches and read their results and state.
 *
 * @since 0.1.0
 * @category tags
 */
export class DurableBatch extends Context.Tag("wiz-effect/DurableBatch")<DurableBatch, DurableBatch.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace DurableBatch {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Submit a batch (its id is `id`, else {@link batchIdOf} the tasks) and return its id. The
     * tasks already recorded are not submitted again; a task submitted before is run once.
     * Task ids must be unique within a batch: a task whose id another position holds fails the
     * submission with `DuplicateTaskId`, and nothing of it is stored.
     *
     * A batch can be submitted in parts, in order: each part with the batch's `id` and `from`,
     * the position of its first task in the batch (0 for the first part), a multiple of
     * `unitSize` for every part but the first (the units are by position; another position
     * fails with `PartNotAligned`).
     */
    readonly submit: (
      tasks: ReadonlyArray<AgentTask>,
      options?: { readonly id?: string; readonly from?: number }
    ) => Effect.Effect<string, TaskStore.StoreError | TaskStore.DuplicateTaskId | PartNotAligned>
    /**
     * Every result of the batch as it is stored, on any runner; ends when all are. For a batch
     * still being submitted in parts, `submitted` says when its last part is: until then the
     * stream does not end (every task submitted so far may be done before the next part).
     */
    readonly results: (
      batchId: string,
      options?: { readonly submitted?: Effect.Effect<boolean> }
    ) => Stream.Stream<TaskResult, TaskStore.StoreError | BatchNotFound>
    /** The batch's tasks by state. */
    readonly state: (batchId: string) => Effect.Effect<TaskStore.BatchState, TaskStore.StoreError | BatchNotFound>
    /** Every batch in the store, newest first. */
    readonly batches: Effect.Effect<ReadonlyArray<TaskStore.BatchState>, TaskStore.StoreError>
    /** Tasks running now, by the runner that started them. */
    readonly running: Effect.Effect<ReadonlyMap<string, number>, TaskStore.StoreError>
  }
}

/**
 * `pollInterval`: how often `results` looks for new records (200 ms). `unitSize`: the tasks of
 * one unit of the cluster (8): the engine's work (a message stored, delivered, answered) is per
 * unit, so it is shared by the unit's tasks; each task is still recorded once, and a crash
 * repeats only the calls it cut off (the unit's recorded tasks are skipped when it runs again).
 * Fewer a unit spreads a batch more evenly over the runners; more costs less.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = { pollInterval: Duration.millis(200), unitSize: 8 } as const

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How often `results` looks for new records ({@link defaults}). */
  readonly pollInterval?: Duration.DurationInput
  /** Tasks a unit of the cluster ({@link defaults}). */
  readonly unitSize?: number
}

/**
 * The service, on the engine and the database in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const store = yield* TaskStore.make
    const engine = yield* Effect.context<WorkflowEngine>()
    const pollInterval = options.pollInterval ?? defaults.pollInterval
    const unitSize = Math.max(1, Math.floor(options.unitSize ?? defaults.unitSize))

    const state = (batchId: string) =>
      Effect.flatMap(store.state(batchId), Option.match({
        onNone: () => Effect.fail(new BatchNotFound({ batchId })),
        onSome: Effect.succeed
      }))

    const submit = (tasks: ReadonlyArray<AgentTask>, submitOptions: { readonly id?: string; readonly from?: number } = {}) =>
      Effect.gen(function*() {
        const batchId = submitOptions.id ?? batchIdOf(tasks)
        const from = submitOptions.from ?? 0
        if (!Number.isInteger(from) || from < 0 || from % unitSize !== 0) {
          return yield* new PartNotAligned({ batchId, from, unitSize })
        }
        yield* store.addBatch(batchId, tasks, from)
        const open = yield* store.unfinished(batchId, from, tasks.length)
        // the units by position in the batch; one with every task recorded is not submitted
        const units = new Map<number, Array<AgentTask>>()
        tasks.forEach((task, i) => {
          const unit = Math.floor((from + i) / unitSize)
          const members = units.get(unit)
          if (members === undefined) units.set(unit, [task])
          else members.push(task)
        })
        yield* Effect.forEach(
          [...units].filter(([, members]) => members.some((task) => open.has(task.id))),
          ([unit, members]) =>
            UnitWorkflow.execute({ batchId, unit, tasks: members }, { discard: true }).pipe(
              Effect.catchSomeDefect((defect) => Socket.isSocketError(defect) ? Option.some(Effect.fail(defect)) : Option.none()),
              Effect.retry({ schedule: handOverRetry, while: Socket.isSocketError }),
              Effect.catchIf(Socket.isSocketError, Effect.die)
            ),
          { concurrency: 16, discard: true }
        ).pipe(Effect.provide(engine))
        return batchId
      })

    const results = (
      batchId: string,
      resultsOptions: { readonly submitted?: Effect.Effect<boolean> } = {}
    ): Stream.Stream<TaskResult, TaskStore.StoreError | BatchNotFound> =>
      Stream.unwrap(Effect.gen(function*() {
        const submitted = resultsOptions.submitted ?? Effect.succeed(true)
        yield* state(batchId)
        const seen = new Set<string>()
        let cursor = 0
        let done = false
        // Records in the order they were stored; a record whose sequence number committed
        // after a later one's is found by the sweep once the batch says every task is done.
        const poll = Effect.gen(function*() {
          const fresh: Array<TaskResult> = []
          const take = (record: TaskResult) => {
            if (!seen.has(record.id)) {
              seen.add(record.id)
              fresh.push(record)
            }
          }
          for (const { record, seq } of yield* store.recordsAfter(batchId, cursor)) {
            cursor = Math.max(cursor, seq)
            take(record)
          }
          // whether every part was submitted, asked before the state is read
          const complete = yield* submitted
          const now = yield* state(batchId)
          if (complete && now.succeeded + now.failed >= now.total) {
            if (seen.size < now.total) for (const record of yield* store.records(batchId)) take(record)
            done = seen.size >= now.total
          }
          return Chunk.unsafeFromArray(fresh)
        })
        const next = Effect.suspend(() => (done ? Effect.fail(Option.none()) : poll.pipe(Effect.mapError(Option.some))))
        return Stream.repeatEffectChunkOption(next.pipe(
          Effect.tap((chunk) => (Chunk.isEmpty(chunk) && !done ? Effect.sleep(pollInterval) : Effect.void))
        ))
      }))

    return DurableBatch.of({ submit, results, state, batches: store.batches, running: store.runningByRunner })
  })

/**
 * The service as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<DurableBatch, TaskStore.StoreError, WorkflowEngine | SqlClient.SqlClient> =>
  Layer.effect(DurableBatch, make(options))
