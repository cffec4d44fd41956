/**
 * The tables a durable batch keeps beside the cluster's own (`cluster_messages`,
 * `cluster_replies`, `cluster_runners`): one row per batch and one per task, with the task's
 * state (`queued`; `running` from its first model call; `succeeded`, `failed`), the model
 * calls its unit began (`calls`: calls begun with no record after them were cut off by a
 * crash), the runner that called last, and its record once it has one.
 *
 * Why tables of our own when the cluster stores every workflow's reply: a batch's state and its
 * results are read by batch (how many are done, which records came since the last look), which
 * the cluster's storage cannot answer without decoding every reply; and the record is written
 * here once (`UPDATE … WHERE record IS NULL`), so a unit run again after a crash that came
 * between writing the record and the cluster's reply finds it and makes no call. Queueing,
 * locking and failover stay the cluster's: nothing here claims or leases work.
 *
 * The same SQL serves SQLite and PostgreSQL; `done_seq` (the order records were written in) is
 * `MAX + 1` on SQLite (one writer) and a sequence on PostgreSQL.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Option, Schema } from "effect"
import { type AgentTask, TaskResult } from "../agent/AgentTask.js"

/**
 * A store operation failed: the database could not be reached or refused a statement.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  message: Schema.String
}) {
  /**
   * A failed statement as a `StoreError`, with what the database said (`SqlError`'s own message
   * says only that it failed), after `context` when given.
   */
  static fromSql(operation: string, context?: string): (error: SqlError) => StoreError {
    return (error) => {
      const said = error.cause instanceof Error && error.cause.message !== "" ? `${error.message}: ${error.cause.message}` : error.message
      return new StoreError({ operation, message: context === undefined ? said : `${context}: ${said}` })
    }
  }
}

/**
 * Two tasks of one batch have the same id: a batch's tasks are keyed by it, so the second would
 * never run. Nothing of the submission is stored.
 *
 * @since 0.1.0
 * @category errors
 */
export class DuplicateTaskId extends Schema.TaggedError<DuplicateTaskId>()("DuplicateTaskId", {
  batchId: Schema.String,
  taskId: Schema.String,
  /** The positions in the batch of the task stored first and of the one refused. */
  positions: Schema.Tuple(Schema.Number, Schema.Number)
}) {
  override get message(): string {
    return `batch "${this.batchId}": the task at position ${this.positions[1]} has the id "${this.taskId}" of the task at position ${this.positions[0]}; task ids must be unique within a batch`
  }
}

/**
 * Where a batch is: its tasks by state.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchState {
  readonly batchId: string
  /** Its tasks (one per task id). */
  readonly total: number
  readonly queued: number
  readonly running: number
  readonly succeeded: number
  readonly failed: number
  /** Clock time the batch was first submitted, in milliseconds. */
  readonly createdAt: number
}

/**
 * The start of a task's unit: its record when it has one already (nothing to run), else the
 * model calls earlier runs of the unit began (runs a crash cut off, since none left a record).
 *
 * @since 0.1.0
 * @category models
 */
export type Begun =
  | { readonly _tag: "Recorded"; readonly record: TaskResult }
  | { readonly _tag: "Started"; readonly callsBefore: number }

const decodeRecord = Schema.decodeUnknownSync(Schema.parseJson(TaskResult))
const encodeRecord = Schema.encodeSync(Schema.parseJson(TaskResult))

/**
 * The store on the `SqlClient` in context: its tables are created when missing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const pg = sql.onDialectOrElse({ pg: () => true, orElse: () => false })
  // Processes starting together would race to create the tables (PostgreSQL's CREATE ... IF NOT
  // EXISTS is not safe against that): there, one at a time under a lock.
  yield* Effect.all([
    pg ? sql`SELECT pg_advisory_xact_lock(2026120720)` : Effect.void,
    sql`CREATE TABLE IF NOT EXISTS wiz_batches (
      batch_id TEXT PRIMARY KEY,
      created_at BIGINT NOT NULL
    )`,
    sql`CREATE TABLE IF NOT EXISTS wiz_tasks (
      batch_id TEXT NOT NULL,
      task_id TEXT NOT NULL,
      seq INTEGER NOT NULL,
      status TEXT NOT NULL,
      calls INTEGER NOT NULL DEFAULT 0,
      runner TEXT,
      record TEXT,
      done_seq BIGINT,
      PRIMARY KEY (batch_id, task_id)
    )`,
    sql`CREATE INDEX IF NOT EXISTS wiz_tasks_done ON wiz_tasks (batch_id, done_seq)`,
    pg ? sql`CREATE SEQUENCE IF NOT EXISTS wiz_done_seq` : Effect.void
  ], { discard: true }).pipe(sql.withTransaction, Effect.mapError(StoreError.fromSql("create tables")))

  // per batch on SQLite: the index on (batch_id, done_seq) answers it at once, where a MAX over
  // the whole table read every row of every batch for each record (quadratic in a batch)
  const nextDone = (batchId: string) =>
    pg
      ? sql.literal("nextval('wiz_done_seq')")
      : sql`(SELECT COALESCE(MAX(done_seq), 0) + 1 FROM wiz_tasks WHERE batch_id = ${batchId})`

  const count = (value: unknown): number => Number(value ?? 0)

  const stateOf = (row: Record<string, unknown>, counts: ReadonlyArray<Record<string, unknown>>): BatchState => {
    const by = (status: string) => count(counts.find((c) => c.status === status && c.batch_id === row.batch_id)?.n)
    const [queued, running, succeeded, failed] = [by("queued"), by("running"), by("succeeded"), by("failed")]
    return {
      batchId: String(row.batch_id),
      total: queued + running + succeeded + failed,
      queued,
      running,
      succeeded,
      failed,
      createdAt: count(row.created_at)
    }
  }

  return {
    /**
     * Record a batch and its tasks as queued, the first at position `from` in the batch (0);
     * what is there already is kept (the same tasks submitted again). A task whose id another
     * position of the batch holds fails the whole call with {@link DuplicateTaskId}.
     */
    addBatch: (batchId: string, tasks: ReadonlyArray<AgentTask>, from = 0) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* sql`INSERT INTO wiz_batches ${sql.insert({ batch_id: batchId, created_at: now })}
          ON CONFLICT DO NOTHING`
        for (let at = 0; at < tasks.length; at += 500) {
          const rows = tasks.slice(at, at + 500).map((task, i) => ({
            batch_id: batchId,
            task_id: task.id,
            seq: from + at + i,
            status: "queued"
          }))
          yield* sql`INSERT INTO wiz_tasks ${sql.insert(rows)} ON CONFLICT DO NOTHING`
        }
        // a position left empty is a task whose id was already stored at another one
        const stored = yield* sql<{ seq: unknown }>`SELECT seq FROM wiz_tasks
          WHERE batch_id = ${batchId} AND seq >= ${from} AND seq < ${from + tasks.length}`
        const held = new Set(stored.map((row) => count(row.seq)))
        const at = tasks.findIndex((_, i) => !held.has(from + i))
        if (at >= 0) {
          const taskId = tasks[at]!.id
          const [first] = yield* sql<{ seq: unknown }>`SELECT seq FROM wiz_tasks WHERE batch_id = ${batchId} AND task_id = ${taskId}`
          return yield* new DuplicateTaskId({ batchId, taskId, positions: [count(first?.seq), from + at] })
        }
      }).pipe(
        sql.withTransaction,
        Effect.catchTag("SqlError", (error) => Effect.fail(StoreError.fromSql("add batch")(error)))
      ),

    /** The ids of the batch's tasks at positions `from` to `from + count - 1` that have no record yet. */
    unfinished: (batchId: string, from: number, count: number) =>
      sql<{ task_id: string }>`SELECT task_id FROM wiz_tasks
        WHERE batch_id = ${batchId} AND seq >= ${from} AND seq < ${from + count} AND record IS NULL`.pipe(
        Effect.map((rows) => new Set(rows.map((row) => row.task_id))),
        Effect.mapError(StoreError.fromSql("read unfinished tasks"))
      ),

    /**
     * A unit starts on these tasks: for each, its record if it has one, else the calls earlier
     * runs began (one statement for the unit).
     */
    begin: (batchId: string, taskIds: ReadonlyArray<string>): Effect.Effect<ReadonlyMap<string, Begun>, StoreError> =>
      sql<{ task_id: string; calls: number; record: string | null }>`
        SELECT task_id, calls, record FROM wiz_tasks WHERE batch_id = ${batchId} AND ${sql.in("task_id", taskIds)}`.pipe(
        Effect.map((rows) => {
          const byId = new Map(rows.map((row) => [row.task_id, row]))
          return new Map(taskIds.map((id): [string, Begun] => {
            const row = byId.get(id)
            return [
              id,
              row?.record != null
                ? { _tag: "Recorded", record: decodeRecord(row.record) }
                : { _tag: "Started", callsBefore: count(row?.calls) }
            ]
          }))
        }),
        Effect.mapError(StoreError.fromSql("begin unit"))
      ),

    /** A model call for the task begins on `runner`: counted, and the task is running there. */
    called: (batchId: string, taskId: string, runner: string): Effect.Effect<void, StoreError> =>
      sql`UPDATE wiz_tasks SET calls = calls + 1, status = 'running', runner = ${runner}
        WHERE batch_id = ${batchId} AND task_id = ${taskId} AND record IS NULL`.pipe(
        Effect.asVoid,
        Effect.mapError(StoreError.fromSql("count a call"))
      ),

    /** Store a task's record once; the record stored is returned (an earlier one wins). */
    finish: (batchId: string, record: TaskResult): Effect.Effect<TaskResult, StoreError> =>
      Effect.gen(function*() {
        // one statement when the record is the first (always, but after a crash between this
        // and the cluster's reply): RETURNING says it was written
        const written = yield* sql<{ task_id: string }>`UPDATE wiz_tasks
          SET record = ${encodeRecord(record)}, status = ${record.status}, done_seq = ${nextDone(batchId)}
          WHERE batch_id = ${batchId} AND task_id = ${record.id} AND record IS NULL RETURNING task_id`
        if (written.length > 0) return record
        const [row] = yield* sql<{ record: string }>`
          SELECT record FROM wiz_tasks WHERE batch_id = ${batchId} AND task_id = ${record.id}`
        return row === undefined ? record : decodeRecord(row.record)
      }).pipe(Effect.mapError(StoreError.fromSql("store record"))),

    /** Records written after `after` (by `done_seq`), in that order, with their `done_seq`. */
    recordsAfter: (batchId: string, after: number) =>
      sql<{ task_id: string; record: string; done_seq: number | string }>`
        SELECT task_id, record, done_seq FROM wiz_tasks
        WHERE batch_id = ${batchId} AND done_seq > ${after} ORDER BY done_seq`.pipe(
        Effect.map((rows) => rows.map((row) => ({ seq: count(row.done_seq), record: decodeRecord(row.record) }))),
        Effect.mapError(StoreError.fromSql("read records"))
      ),

    /** Every record of the batch. */
    records: (batchId: string) =>
      sql<{ record: string }>`SELECT record FROM wiz_tasks WHERE batch_id = ${batchId} AND record IS NOT NULL`.pipe(
        Effect.map((rows) => rows.map((row) => decodeRecord(row.record))),
        Effect.mapError(StoreError.fromSql("read records"))
      ),

    /** The batch's state, or none when no such batch was submitted. */
    state: (batchId: string): Effect.Effect<Option.Option<BatchState>, StoreError> =>
      Effect.gen(function*() {
        const [batch] = yield* sql<Record<string, unknown>>`SELECT * FROM wiz_batches WHERE batch_id = ${batchId}`
        if (batch === undefined) return Option.none()
        const counts = yield* sql<Record<string, unknown>>`
          SELECT batch_id, status, COUNT(*) AS n FROM wiz_tasks WHERE batch_id = ${batchId} GROUP BY batch_id, status`
        return Option.some(stateOf(batch, counts))
      }).pipe(Effect.mapError(StoreError.fromSql("read batch state"))),

    /** Every batch's state, newest first. */
    batches: Effect.gen(function*() {
      const batches = yield* sql<Record<string, unknown>>`SELECT * FROM wiz_batches ORDER BY created_at DESC`
      const counts = yield* sql<Record<string, unknown>>`
        SELECT batch_id, status, COUNT(*) AS n FROM wiz_tasks GROUP BY batch_id, status`
      return batches.map((batch) => stateOf(batch, counts))
    }).pipe(Effect.mapError(StoreError.fromSql("read batches"))),

    /**
     * The cluster's runners (`cluster_runners`): address, whether it counts as healthy, and
     * seconds since its last heartbeat. None before the first runner made the table.
     */
    runners: Effect.flatMap(
      pg
        ? sql<{ present: unknown }>`SELECT to_regclass('cluster_runners') IS NOT NULL AS present`
        : sql<{ present: unknown }>`SELECT COUNT(*) AS present FROM sqlite_master WHERE type = 'table' AND name = 'cluster_runners'`,
      ([table]) =>
        count(table?.present) > 0
          ? sql<{ address: string; healthy: unknown; age: unknown }>`
            SELECT address, healthy, ${
            pg
              ? sql.literal("EXTRACT(EPOCH FROM (NOW() - last_heartbeat))")
              : sql.literal("(julianday('now') - julianday(last_heartbeat)) * 86400")
          } AS age FROM cluster_runners ORDER BY address`
          : Effect.succeed([])
    ).pipe(
      Effect.map((rows) =>
        rows.map((row) => ({ address: row.address, healthy: row.healthy === true || row.healthy === 1, ageSeconds: count(row.age) }))
      ),
      Effect.mapError(StoreError.fromSql("read runners"))
    ),

    /** Tasks running now, by the runner that started them. */
    runningByRunner: sql<{ runner: string; n: unknown }>`
      SELECT runner, COUNT(*) AS n FROM wiz_tasks WHERE status = 'running' GROUP BY runner`.pipe(
      Effect.map((rows) => new Map(rows.map((row) => [row.runner, count(row.n)]))),
      Effect.mapError(StoreError.fromSql("read running tasks"))
    )
  }
})

/**
 * @since 0.1.0
 * @category models
 */
export type TaskStore = Effect.Effect.Success<typeof make>
