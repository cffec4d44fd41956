/**
 * The embedded store: a durable batch in one SQLite file, no server. The cluster runs as a
 * single runner (`SingleRunner`) on the file, and this process holds the file for as long as it
 * runs: a second process opening it is refused at once with {@link StoreInUse}, instead of
 * meeting `database is locked` later, mid-batch (Effect-TS issues #6176 and #6179: the cluster's
 * SQLite storage is for one process; use `PgStore` for several).
 *
 * The hold is SQLite's own lock, taken by the operating system on the file: the connection runs
 * in `locking_mode = EXCLUSIVE` and writes once, so the lock stays until the connection closes,
 * and a process killed with `kill -9` loses it with its file descriptors; nothing is left to
 * clean up. `busy_timeout = 0` makes the second opener fail at once rather than wait.
 *
 * Writes go to a write-ahead log synced at checkpoints, not at each commit (`journal_mode = WAL`,
 * `synchronous = NORMAL`): a process killed with `kill -9` loses nothing it committed (the log
 * is in the file system's cache, the next open replays it); a power cut may lose the last
 * commits, whose tasks then run again. A sync per commit cost a millisecond of each message of
 * the cluster (six commits a task), with the process waiting on the disk.
 *
 * @example
 * ```ts
 * import * as SqliteStore from "wiz-effect/durable/SqliteStore"
 *
 * // WorkflowEngine and SqlClient, for DurableBatch.layer() and DurableBatch.worker(...)
 * const store = SqliteStore.layer({ filename: "wiz.db" })
 * ```
 *
 * @since 0.1.0
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import type * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SingleRunner from "@effect/cluster/SingleRunner"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import { Context, Effect, Layer, Schema } from "effect"
import type { ConfigError } from "effect"
import { StoreError } from "./TaskStore.js"

/**
 * Another process holds the SQLite store.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreInUse extends Schema.TaggedError<StoreInUse>()("StoreInUse", {
  filename: Schema.String
}) {
  override get message(): string {
    return `the store "${this.filename}" is in use by another process: a SQLite store serves one process at a time ` +
      "(wait for it to end, or use a PostgreSQL store, postgres://..., to run several)"
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The SQLite file; created when missing. */
  readonly filename: string
  /** The cluster's settings, over its defaults. */
  readonly shardingConfig?: Partial<ShardingConfig.ShardingConfig["Type"]>
}

const busy = (error: SqlError): boolean => /SQLITE_BUSY|database is locked/i.test(`${error.message} ${String((error.cause as { code?: unknown })?.code ?? error.cause)}`)

/**
 * The file's one connection, holding the file until it closes: the database alone, without the
 * engine (to read a store's state).
 *
 * @since 0.1.0
 * @category layers
 */
export const database = (filename: string): Layer.Layer<SqlClient.SqlClient, StoreInUse | StoreError> =>
  Layer.scopedContext(Effect.gen(function*() {
    // better-sqlite3 throws when it cannot open the file (a directory that does not exist, no
    // permission): a defect of the client's constructor, said here as the store's error
    const sqlite = yield* SqliteClient.make({ filename, disableWAL: true }).pipe(
      Effect.catchAllDefect((defect) =>
        Effect.fail(new StoreError({ operation: "open", message: `cannot open ${filename}: ${defect instanceof Error ? defect.message : String(defect)}` }))
      )
    )
    yield* Effect.all([
      sqlite`PRAGMA busy_timeout = 0`,
      sqlite`PRAGMA locking_mode = EXCLUSIVE`,
      sqlite`PRAGMA journal_mode = WAL`,
      sqlite`PRAGMA synchronous = NORMAL`,
      sqlite`CREATE TABLE IF NOT EXISTS wiz_holder (id INTEGER PRIMARY KEY)`,
      sqlite`DELETE FROM wiz_holder`
    ], { discard: true }).pipe(
      Effect.mapError((error) =>
        busy(error)
          ? new StoreInUse({ filename })
          : StoreError.fromSql("open", `cannot open ${filename}`)(error)
      )
    )
    return Context.make(SqlClient.SqlClient, sqlite)
  })).pipe(Layer.provide(Reactivity.layer))

/**
 * The engine and the database on one SQLite file, for one process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<WorkflowEngine | SqlClient.SqlClient, StoreInUse | StoreError | ConfigError.ConfigError> =>
  ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(SingleRunner.layer({
      runnerStorage: "sql",
      ...(options.shardingConfig ? { shardingConfig: options.shardingConfig } : {})
    })),
    Layer.provideMerge(database(options.filename))
  )
