/**
 * The durable store's command line: the `--store`, `--no-work`, `--host` and `--port` options
 * of `wiz run`, and the `wiz worker` and `wiz status` commands. Their work is in
 * {@link DurableRun}, imported only when a store is named, so a run without one never loads the
 * cluster, the SQL clients or the native `better-sqlite3`.
 *
 * @since 0.1.0
 */
import { Command, Options } from "@effect/cli"
import { Effect } from "effect"
import * as CommandSpec from "./CommandSpec.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OptionValue from "./OptionValue.js"

const store = (description: string) => CommandSpec.grouped("Durable store", description)

/**
 * The `DurableRun` module, loaded on demand.
 *
 * @since 0.1.0
 * @category handlers
 */
export const durable = Effect.promise(() => import("./DurableRun.js"))

/**
 * `--host`, `--listen` and `--port`: where the other runners of a PostgreSQL store reach this
 * one, and where it listens for them.
 *
 * @since 0.1.0
 * @category options
 */
export const listenOptions = {
  host: Options.text("host").pipe(
    Options.withPseudoName("HOST"),
    Options.withDescription(store("Where other workers reach this one (default 127.0.0.1)")),
    Options.withDefault("127.0.0.1")
  ),
  bind: OptionValue.optionalText("listen", "HOST", store("Interface it listens on, 0.0.0.0 for all (default: --host)")),
  port: OptionValue.optionalInteger("port", 1, store("The port it listens on for them (default: a free one)"))
}

/**
 * `--store` and `--no-work` of `wiz run`, with {@link listenOptions}.
 *
 * @since 0.1.0
 * @category options
 */
export const runOptions = {
  store: OptionValue.optionalText("store", "FILE | URL", store("Keep the batch in a SQLite FILE or a postgres:// database")),
  noWork: OptionValue.flag("no-work", store("postgres:// only: submit and write, leave the work to workers")),
  ...listenOptions
}

const storeRequired = Options.text("store").pipe(
  Options.withPseudoName("FILE | URL"),
  Options.withDescription(store("The store: a SQLite FILE or a postgres:// database"))
)

/**
 * The `worker` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const worker = Command.make("worker", {
  store: storeRequired,
  concurrency: OptionValue.integerOr("concurrency", 1, "adaptive").pipe(
    Options.withDescription(ModelOptions.flow("Model calls at once in this worker, or adaptive (default 8)")),
    Options.withDefault(8)
  ),
  ...listenOptions,
  rpm: ModelOptions.policyOptions.rpm,
  tpm: ModelOptions.policyOptions.tpm,
  retries: ModelOptions.policyOptions.retries,
  timeout: ModelOptions.policyOptions.timeout,
  deadline: ModelOptions.policyOptions.deadline,
  breakerOpen: ModelOptions.policyOptions.breakerOpen,
  redis: ModelOptions.policyOptions.redis,
  redisTimeout: ModelOptions.policyOptions.redisTimeout,
  ...ModelOptions.modelOptions
}, ({ bind, host, port, ...rest }) => Effect.flatMap(durable, (run) => run.worker({ ...rest, listen: { host, bind, port } }))).pipe(
  Command.withDescription(
    "Work on every batch of a PostgreSQL store until SIGTERM (then hand back, exit 0). " +
      "Run one on each machine; wiz run --store with the same URL submits the batches."
  )
)

/**
 * The `status` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const status = Command.make("status", { store: storeRequired }, (options) =>
  Effect.flatMap(durable, (run) => run.status(options))).pipe(
    Command.withDescription("Show a store's batches (tasks succeeded, failed, running, queued) and its workers.")
  )
