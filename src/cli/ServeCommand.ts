/**
 * `wiz serve`: the {@link Gateway} as a process — an OpenAI-compatible endpoint on
 * `http://127.0.0.1:8787/v1` that puts the agent's policies (retries, breaker, token budget,
 * adaptive concurrency, fallback tiers, coalescing, memo) in front of the model `wiz run`'s
 * model options name (`--fallback-model-name`, repeated, for a chain of tiers), for any client
 * in any language.
 *
 * - **Bound to loopback by default.** `--host` anything else refuses to start (a usage error)
 *   without client keys: `--client-keys-env VAR` (the variable holds them) or
 *   `--client-keys-file FILE`, a JSON array of `{"key", "name", "rpm", "tpm"}`. The upstream's
 *   key is read from `--api-key-env` as for `wiz run`, and scrubbed from everything the gateway
 *   sends.
 * - **Lifecycle.** It prints `wiz serve: listening on URL` on stderr once it accepts requests.
 *   SIGTERM (or SIGINT) stops accepting new connections, lets requests and streams in flight
 *   finish for up to `--grace` (default 10 s), closes what is left, and exits 0.
 * - **Logs.** One JSON line per request on stderr (route, status, client name, model, tokens,
 *   duration, error code), without the prompt unless `--log-prompts`; written in batches every
 *   50 ms (and at exit), not one write per request.
 * - **Replicas.** `--redis URL`: several `wiz serve` share their token budgets and breakers
 *   through it (`ModelOptions.layer` provides the shared store under the `AgentService`, whose
 *   `Policies` build every breaker and budget from it).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as ServeCommand from "wiz-effect/cli/ServeCommand"
 *
 * // what `wiz serve --port 8787 --model openai-compatible --base-url ... --model-name gpt-4o-mini --api-key-env OPENAI_API_KEY` does
 * const served = ServeCommand.serve({ ...ServeCommand.defaults, port: 8787 })
 * ```
 *
 * @since 0.1.0
 */
import { Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Config, Duration, Effect, Either, Layer, Logger, LogLevel, Option, Redacted } from "effect"
import { createServer } from "node:http"
import * as ClientKeys from "../gateway/ClientKeys.js"
import * as Gateway from "../gateway/Gateway.js"
import * as CommandSpec from "./CommandSpec.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OptionValue from "./OptionValue.js"
import { Stdio } from "./Stdio.js"
import { usage } from "./UsageError.js"

/**
 * The parsed options of `wiz serve`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServeOptions extends ModelOptions.AgentOptions {
  readonly host: string
  /** 0: a free port the system picks (printed when listening). */
  readonly port: number
  readonly clientKeysEnv: Option.Option<string>
  readonly clientKeysFile: Option.Option<string>
  readonly concurrency: number | "adaptive"
  readonly coalesce: boolean
  readonly memoTtl: Option.Option<Duration.Duration>
  /** After a break mid-answer, have the model go on from the text sent. */
  readonly continueStreams: boolean
  readonly maxBodyBytes: number
  readonly maxStreamChars: number
  readonly maxQueued: number
  readonly cors: ReadonlyArray<string>
  readonly logPrompts: boolean
  readonly grace: Duration.Duration
}

/**
 * The model and policies per `ModelOptions.defaults`, on 127.0.0.1:8787, 64 calls at once, no
 * client keys, the gateway's limits per `Gateway.defaults`, 10 s of grace.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: ServeOptions = {
  ...ModelOptions.defaults,
  host: "127.0.0.1",
  port: 8787,
  clientKeysEnv: Option.none(),
  clientKeysFile: Option.none(),
  concurrency: 64,
  coalesce: false,
  memoTtl: Option.none(),
  continueStreams: false,
  maxBodyBytes: Gateway.defaults.maxBodyBytes,
  maxStreamChars: Gateway.defaults.maxStreamChars,
  maxQueued: Gateway.defaults.maxQueued,
  cors: [],
  logPrompts: false,
  grace: Duration.seconds(10)
}

/**
 * Whether a host name or address is this machine only.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host)

/** Whether the last `serve` drained after a signal: `main.ts` then exits 0, not 128 + n. */
let drained = false

/**
 * Whether the gateway stopped by a signal finished draining (`main.ts` exits 0 then).
 *
 * @since 0.1.0
 * @category running
 */
export const stoppedGracefully = (): boolean => drained

/** A secret from the environment variable `name`, or a usage error naming the option. */
const secretFrom = (option: string, name: string) =>
  Config.redacted(name).pipe(
    Effect.filterOrFail((value) => Redacted.value(value).trim() !== "", () => undefined),
    Effect.mapError(() => usage(`${option} ${name}: that environment variable is not set`))
  )

/** The client keys the options name, none without them. */
const clientKeys = Effect.fnUntraced(function*(options: ServeOptions) {
  if (Option.isSome(options.clientKeysEnv) && Option.isSome(options.clientKeysFile)) {
    return yield* usage("--client-keys-env and --client-keys-file: give one of them")
  }
  let text: string | undefined
  let from = ""
  if (Option.isSome(options.clientKeysEnv)) {
    from = `--client-keys-env ${options.clientKeysEnv.value}`
    text = Redacted.value(yield* secretFrom("--client-keys-env", options.clientKeysEnv.value))
  } else if (Option.isSome(options.clientKeysFile)) {
    from = `--client-keys-file ${options.clientKeysFile.value}`
    const fs = yield* FileSystem.FileSystem
    text = yield* fs.readFileString(options.clientKeysFile.value).pipe(
      Effect.mapError((error) => usage(`${from}: cannot read it (${error.message})`))
    )
  }
  if (text === undefined) return undefined
  const parsed = ClientKeys.parse(text)
  return Either.isLeft(parsed) ? yield* usage(`${from}: ${parsed.left}`) : parsed.right
})

/**
 * The gateway's client for its upstreams: undici's dispatcher, without `fetch`'s web streams
 * and request cloning, which cost about as much again per call as the rest of a request
 * (~0.5 ms of CPU a call; `NodeHttpServer` brings undici in anyway). It follows no redirect:
 * `OpenAiCompatible`'s own rule does. On the process's global dispatcher (keep-alive), which
 * outlives the scope a fallback model is made in.
 */
const upstreamClient = NodeHttpClient.layerUndiciWithoutDispatcher.pipe(Layer.provide(NodeHttpClient.dispatcherLayerGlobal))

/** Stop accepting, let what is in flight finish within `grace`, then close what is left. */
const drain = (server: ReturnType<typeof createServer>, grace: Duration.Duration) =>
  Effect.async<void>((resume) => {
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
    // idle keep-alive connections hold no request: close them now
    server.closeIdleConnections()
  }).pipe(
    Effect.timeout(grace),
    Effect.catchTag("TimeoutException", () => Effect.sync(() => server.closeAllConnections())),
    Effect.zipRight(Effect.sync(() => {
      drained = true
    }))
  )

/**
 * Serve until interrupted (SIGTERM, SIGINT), then drain.
 *
 * @since 0.1.0
 * @category handlers
 */
export const serve = Effect.fn("ServeCommand.serve")(function*(options: ServeOptions) {
  const stdio = yield* Stdio
  const keys = yield* clientKeys(options)
  if (!isLoopback(options.host) && keys === undefined) {
    return yield* usage(
      `--host ${options.host} is reachable from other machines: give client keys with --client-keys-env VAR or --client-keys-file FILE ` +
        `(a JSON array of {"key", "name", "rpm", "tpm"})`
    )
  }
  const agent = yield* ModelOptions.layer(options, {
    concurrency: options.concurrency,
    ...(options.coalesce ? { coalesce: true } : {}),
    ...Option.match(options.memoTtl, { onNone: () => ({}), onSome: (timeToLive) => ({ memo: { timeToLive } }) }),
    ...(options.continueStreams ? { stream: { continue: true } } : {})
  }, { client: upstreamClient })
  // the upstream keys, the fallback tiers' too, to scrub (ModelOptions read them and said when one is not set)
  const secrets = yield* Effect.forEach(
    [...Option.toArray(options.apiKeyEnv), ...(options.fallbackApiKeyEnv ?? [])],
    (variable) => Effect.option(secretFrom("--api-key-env", variable))
  ).pipe(Effect.map((found) => found.flatMap(Option.toArray)))
  const server = createServer()
  const gateway = Gateway.layer({
    models: [ModelOptions.answeredBy(options)],
    ...(keys === undefined ? {} : { clientKeys: keys }),
    secrets,
    maxBodyBytes: options.maxBodyBytes,
    maxStreamChars: options.maxStreamChars,
    maxQueued: options.maxQueued,
    ...(options.cors.length === 0 ? {} : { cors: options.cors }),
    logPrompts: options.logPrompts
  }).pipe(
    Layer.provide(NodeHttpServer.layer(() => server, { port: options.port, host: options.host })),
    Layer.provide(agent),
    // one JSON line per request, written in batches: a write per request would cost a system call each
    Layer.provide(Logger.replaceScoped(
      Logger.defaultLogger,
      Logger.batched(Logger.jsonLogger, "50 millis", (lines) => Effect.ignore(stdio.stderr(`${lines.join("\n")}\n`)))
    )),
    // NodeRuntime.runMain adds its pretty logger next to the default one: left in, every request
    // would also be formatted and written to stdout, one synchronous write each
    Layer.provide(Logger.remove(Logger.prettyLoggerDefault)),
    Layer.provide(Logger.minimumLogLevel(LogLevel.Info))
  )
  drained = false
  yield* Effect.scoped(Effect.gen(function*() {
    yield* Layer.build(gateway).pipe(
      Effect.mapError((error) => (error._tag === "UsageError" ? error : usage(`cannot listen on ${options.host}:${options.port}: ${error.message}`)))
    )
    // runs before the server's own close: it stops accepting, then waits for what is in flight
    yield* Effect.addFinalizer(() => drain(server, options.grace))
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : options.port
    const host = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host
    yield* stdio.stderr(`wiz serve: listening on http://${host}:${port}/v1 (model ${ModelOptions.answeredBy(options)})\n`)
    return yield* Effect.never
  }))
})

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

const network = (description: string) => CommandSpec.grouped("Network", description)
const limits = (description: string) => CommandSpec.grouped("Limits", description)

const serveOptions = {
  host: Options.text("host").pipe(
    Options.withPseudoName("ADDRESS"),
    Options.withDescription(network(`Address to listen on (default ${defaults.host}; anything else needs client keys)`)),
    Options.withDefault(defaults.host)
  ),
  port: OptionValue.integer("port", 0).pipe(
    Options.withDescription(network(`Port to listen on, 0 for any (default ${defaults.port})`)),
    Options.withDefault(defaults.port)
  ),
  clientKeysEnv: OptionValue.optionalText("client-keys-env", "VAR", network("The environment variable holding the client keys (JSON)")),
  clientKeysFile: OptionValue.optionalText("client-keys-file", "FILE", network("A JSON file of client keys: [{\"key\", \"name\", \"rpm\", \"tpm\"}]")),
  cors: Options.text("cors").pipe(
    Options.withPseudoName("ORIGIN"),
    Options.withDescription(network("Allow browsers on ORIGIN to call (repeat for more; default none)")),
    Options.repeated
  ),
  grace: OptionValue.duration(
    "grace",
    "zero",
    network(`On SIGTERM, time given to requests in flight (default ${Duration.format(defaults.grace)})`)
  ).pipe(Options.map(Option.getOrElse(() => defaults.grace))),
  logPrompts: OptionValue.flag("log-prompts", network("Put each request's prompt in its log line")),
  maxBodyBytes: OptionValue.integer("max-body-bytes", 1).pipe(
    Options.withDescription(limits(`Largest request body (default ${defaults.maxBodyBytes})`)),
    Options.withDefault(defaults.maxBodyBytes)
  ),
  maxStreamChars: OptionValue.integer("max-stream-chars", 1).pipe(
    Options.withDescription(limits(`Longest streamed answer, in characters (default ${defaults.maxStreamChars})`)),
    Options.withDefault(defaults.maxStreamChars)
  ),
  maxQueued: OptionValue.integer("max-queued", 1).pipe(
    Options.withDescription(limits(`Calls waiting beyond which a request gets 429 (default ${defaults.maxQueued})`)),
    Options.withDefault(defaults.maxQueued)
  ),
  concurrency: OptionValue.integerOr("concurrency", 1, "adaptive").pipe(
    Options.withDescription(ModelOptions.flow(`Model calls at once, or adaptive (default ${defaults.concurrency})`)),
    Options.withDefault(defaults.concurrency)
  ),
  coalesce: OptionValue.flag("coalesce", ModelOptions.flow("Identical requests in flight share one model call")),
  memoTtl: OptionValue.duration("memo-ttl", "positive", ModelOptions.flow("Answer a request asked again within DURATION from the memo")),
  continueStreams: OptionValue.flag("continue-streams", ModelOptions.policy("If a stream breaks, have the model go on from the text sent")),
  ...ModelOptions.policyOptions,
  ...ModelOptions.modelOptions
}

/**
 * The `serve` subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("serve", serveOptions, (options) => serve(options)).pipe(
  Command.withDescription(
    "Serve an OpenAI-compatible API that answers through the agent's policies. " +
      "POST /v1/chat/completions (whole or streamed), GET /v1/models, /healthz and /metrics; " +
      "loopback only unless given client keys; SIGTERM drains and exits 0."
  )
)
