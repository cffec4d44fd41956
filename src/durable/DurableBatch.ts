/**
 * Batches of agent tasks that survive a crash and spread over machines, on Effect's own durable
 * engine: `@effect/workflow` on `@effect/cluster` (sharding, runners, SQL message storage). Each
 * task is a workflow keyed by its batch and task id (so submitting it twice runs it once), whose
 * body runs the task through `AgentService.process`: every policy (retry, breaker, token
 * budget, coalescing, fallback) works inside it as it does in one process. The body is not
 * wrapped in an `Activity`: with one step, a workflow run again after a crash does what a
 * journaled activity would (the call again, at least once), and the activity's own message and
 * reply, persisted beside the workflow's, doubled the engine's work per task (17 against 10 ms
 * of CPU a task, measured); the record-once rule is {@link TaskStore}'s. The cluster queues
 * the units, spreads them over the runners of the store, and, when a runner dies, moves its
 * units to another; {@link TaskStore} keeps each batch's state and each task's record.
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
import * as Workflow from "@effect/workflow/Workflow"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import { Chunk, Context, Duration, Effect, FiberRef, Layer, Option, Schedule, Schema, Stream } from "effect"
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
 * One task of a batch, as the cluster runs it: keyed by batch and task id, so it runs once
 * however often it is submitted.
 *
 * @since 0.1.0
 * @category workflows
 */
export const TaskWorkflow = Workflow.make({
  name: "wiz/AgentTask",
  payload: { batchId: Schema.String, task: AgentTask },
  error: TaskStore.StoreError,
  idempotencyKey: ({ batchId, task }) => `${batchId}/${task.id}`
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

/** What to do as a model call begins in the unit this fiber runs, if it runs one. */
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
 * Run the batches' tasks in this process: registers {@link TaskWorkflow} with the engine, each
 * unit running its task through the `AgentService` in context (built on {@link journal}, for
 * its records to count the calls of runs a crash cut off). `runner` names this process in the
 * store (`wiz status` shows it).
 *
 * @since 0.1.0
 * @category layers
 */
export const worker = (options: {
  readonly runner: string
}): Layer.Layer<never, TaskStore.StoreError, WorkflowEngine | SqlClient.SqlClient | AgentService> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const store = yield* TaskStore.make
    const agent = yield* AgentService
    const answer = (batchId: string, task: AgentTask) =>
      Effect.gen(function*() {
        const begun = yield* Effect.retry(store.begin(batchId, task.id), storeRetry)
        if (begun._tag === "Recorded") return
        // a call not noted is still made: the record may then count fewer calls than were made
        const called = Effect.retry(store.called(batchId, task.id, options.runner), storeRetry).pipe(
          Effect.catchAll((error) => Effect.logWarning(`wiz: task ${task.id}: a model call was not noted in the store: ${error.message}`))
        )
        const result: TaskResult = yield* Effect.catchAll(agent.process(task), Effect.succeed).pipe(
          Effect.locally(currentUnit, Option.some(called))
        )
        const record = begun.callsBefore > 0 ? recovered(result, begun.callsBefore) : result
        yield* Effect.retry(store.finish(batchId, record), storeRetry)
      })
    return TaskWorkflow.toLayer(({ batchId, task }) => answer(batchId, task))
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
     * Task ids must be unique within a batch.
     */
    readonly submit: (
      tasks: ReadonlyArray<AgentTask>,
      options?: { readonly id?: string }
    ) => Effect.Effect<string, TaskStore.StoreError>
    /** Every result of the batch as it is stored, on any runner; ends when all are. */
    readonly results: (batchId: string) => Stream.Stream<TaskResult, TaskStore.StoreError | BatchNotFound>
    /** The batch's tasks by state. */
    readonly state: (batchId: string) => Effect.Effect<TaskStore.BatchState, TaskStore.StoreError | BatchNotFound>
    /** Every batch in the store, newest first. */
    readonly batches: Effect.Effect<ReadonlyArray<TaskStore.BatchState>, TaskStore.StoreError>
    /** Tasks running now, by the runner that started them. */
    readonly running: Effect.Effect<ReadonlyMap<string, number>, TaskStore.StoreError>
  }
}

/**
 * `pollInterval`: how often `results` looks for new records (200 ms).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = { pollInterval: Duration.millis(200) } as const

/**
 * The service, on the engine and the database in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly pollInterval?: Duration.DurationInput } = {}) =>
  Effect.gen(function*() {
    const store = yield* TaskStore.make
    const engine = yield* Effect.context<WorkflowEngine>()
    const pollInterval = options.pollInterval ?? defaults.pollInterval

    const state = (batchId: string) =>
      Effect.flatMap(store.state(batchId), Option.match({
        onNone: () => Effect.fail(new BatchNotFound({ batchId })),
        onSome: Effect.succeed
      }))

    const submit = (tasks: ReadonlyArray<AgentTask>, submitOptions: { readonly id?: string } = {}) =>
      Effect.gen(function*() {
        const batchId = submitOptions.id ?? batchIdOf(tasks)
        yield* store.addBatch(batchId, tasks)
        const open = yield* store.unfinished(batchId)
        yield* Effect.forEach(
          tasks.filter((task) => open.has(task.id)),
          (task) => TaskWorkflow.execute({ batchId, task }, { discard: true }),
          { concurrency: 16, discard: true }
        ).pipe(Effect.provide(engine))
        return batchId
      })

    const results = (batchId: string): Stream.Stream<TaskResult, TaskStore.StoreError | BatchNotFound> =>
      Stream.unwrap(Effect.gen(function*() {
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
          const now = yield* state(batchId)
          if (now.succeeded + now.failed >= now.total) {
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
  options: { readonly pollInterval?: Duration.DurationInput } = {}
): Layer.Layer<DurableBatch, TaskStore.StoreError, WorkflowEngine | SqlClient.SqlClient> =>
  Layer.effect(DurableBatch, make(options))
