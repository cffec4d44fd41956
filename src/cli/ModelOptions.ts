/**
 * The options `wiz run`, `wiz ask` and `wiz serve` share, parsed once here: which model answers
 * (the embedded simulator with its latencies and injected faults, or an OpenAI-compatible API
 * with its key read from the environment), the fallback tiers after it, and the agent's
 * policies around them (retries, the timeout of an attempt, the deadline of a task, how long
 * the circuit breaker stays open). {@link layer} checks that they go together and turns them
 * into the `AgentService` the commands run on.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AgentService, AgentTask } from "wiz-effect"
 * import * as ModelOptions from "wiz-effect/cli/ModelOptions"
 *
 * // the agent of `wiz run --retries 2 --failure-rate 0.1`
 * const program = Effect.gen(function*() {
 *   const agent = yield* ModelOptions.layer({ ...ModelOptions.defaults, retries: 2, failureRate: 0.1 }, { concurrency: 4 })
 *   const task = new AgentTask.AgentTask({ id: "t1", prompt: "Summarise: ..." })
 *   return yield* Effect.flatMap(AgentService.AgentService, (service) => service.process(task)).pipe(Effect.provide(agent))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Options } from "@effect/cli"
import { FetchHttpClient } from "@effect/platform"
import type * as HttpClient from "@effect/platform/HttpClient"
import { Config, Duration, Effect, Layer, Option, Redacted } from "effect"
import * as AgentService from "../agent/AgentService.js"
import type * as AiModel from "../model/AiModel.js"
import * as EmbeddedModel from "../model/EmbeddedModel.js"
import * as OpenAiCompatible from "../model/OpenAiCompatible.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Retry from "../policy/Retry.js"
import * as RedisStore from "../store/RedisStore.js"
import type * as SharedStore from "../store/SharedStore.js"
import * as CommandSpec from "./CommandSpec.js"
import * as OptionValue from "./OptionValue.js"
import { usage, type UsageError } from "./UsageError.js"

/**
 * The models `--model` names.
 *
 * @since 0.1.0
 * @category models
 */
export type Model = "embedded" | "openai-compatible"

/**
 * Which model answers, and how.
 *
 * @since 0.1.0
 * @category models
 */
export interface ModelOptions {
  readonly model: Model
  /** OpenAI-compatible model: the API's base URL, up to `/chat/completions`. */
  readonly baseUrl: Option.Option<string>
  /** OpenAI-compatible model: the model to ask for. */
  readonly modelName?: Option.Option<string>
  /** OpenAI-compatible model: the environment variable holding the API key; none for no key. */
  readonly apiKeyEnv: Option.Option<string>
  /** Embedded model: probability that a call fails. */
  readonly failureRate: number
  /** Embedded model: seed of its draws; none for a random one. */
  readonly seed: Option.Option<number>
  /** Embedded model: time before the first token. */
  readonly timeToFirstToken: Option.Option<Duration.Duration>
  /** Embedded model: time per completion token. */
  readonly perToken: Option.Option<Duration.Duration>
  /** Embedded model: when a simulated outage starts, from the start of the run (with `outageFor`). */
  readonly outageAfter: Option.Option<Duration.Duration>
  /** Embedded model: how long the simulated outage lasts (with `outageAfter`). */
  readonly outageFor: Option.Option<Duration.Duration>
  /** Embedded model: probability that a streamed answer breaks after its first chunk; 0 when absent. */
  readonly midStreamFailureRate?: number
  /** Embedded model: how a stream breaks: `error` (Unavailable) or `end` (no final chunk). */
  readonly midStreamFailure?: "error" | "end"
  /** Embedded model: its own limit on requests per minute; none for no limit. */
  readonly providerRpm?: Option.Option<number>
  /** Embedded model: its own limit on tokens per minute; none for no limit. */
  readonly providerTpm?: Option.Option<number>
  /** Embedded model: calls it serves at full speed at once (slower beyond, Overloaded past 2×); none for no limit. */
  readonly providerCapacity?: Option.Option<number>
  /**
   * Fallback tiers, in order: the OpenAI-compatible model each asks for, when the tiers before
   * it fail (none by default).
   */
  readonly fallbackModelName?: ReadonlyArray<string>
  /** The API of the fallback tiers: one for all of them, or one per tier (default `baseUrl`). */
  readonly fallbackBaseUrl?: ReadonlyArray<string>
  /** The environment variable holding the fallback tiers' key: one for all, or one per tier (default `apiKeyEnv`). */
  readonly fallbackApiKeyEnv?: ReadonlyArray<string>
}

/**
 * The agent's policies around the model.
 *
 * @since 0.1.0
 * @category models
 */
export interface PolicyOptions {
  /** Retries after the first attempt. */
  readonly retries: number
  /** Time one attempt may take (a streamed answer: until its first chunk). */
  readonly timeout: Duration.Duration
  /** Time one task may take in all: calls, backoffs, Retry-After waits and open circuits. */
  readonly deadline: Duration.Duration
  /** How long the circuit breaker stays open; none for `CircuitBreaker.defaults.openDuration`. */
  readonly breakerOpen: Option.Option<Duration.Duration>
  /** Our token budget's limit on requests per minute; none to learn it from the provider. */
  readonly rpm?: Option.Option<number>
  /** Our token budget's limit on tokens per minute; none to learn it from the provider. */
  readonly tpm?: Option.Option<number>
  /**
   * A Redis URL: share the token budget and the circuit breaker with every process on it that
   * uses the same provider and key (`RedisStore`); none to keep them in the process.
   */
  readonly redis?: Option.Option<string>
  /** Longest a Redis command may take before the process goes on alone for a while (`RedisStore`'s `timeout`). */
  readonly redisTimeout?: Option.Option<Duration.Duration>
}

/**
 * Everything the agent of a command is built from.
 *
 * @since 0.1.0
 * @category models
 */
export interface AgentOptions extends ModelOptions, PolicyOptions {}

/**
 * The embedded model with its own defaults and no outage, `retries` one less than
 * `Retry.defaults.maxAttempts`, `timeout` and `deadline` per `AgentService.defaults`, the
 * breaker per `CircuitBreaker.defaults`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: AgentOptions = {
  model: "embedded",
  baseUrl: Option.none(),
  modelName: Option.none(),
  apiKeyEnv: Option.none(),
  failureRate: EmbeddedModel.defaults.failureRate,
  seed: Option.none(),
  timeToFirstToken: Option.none(),
  perToken: Option.none(),
  outageAfter: Option.none(),
  outageFor: Option.none(),
  retries: Retry.defaults.maxAttempts - 1,
  timeout: AgentService.defaults.timeout,
  deadline: AgentService.defaults.deadline,
  breakerOpen: Option.none()
}

/**
 * The model a record names when the model these options choose answers it: `embedded` for the
 * simulator, the `--model-name` asked of an OpenAI-compatible API.
 *
 * @since 0.1.0
 * @category models
 */
export const answeredBy = (options: ModelOptions): string =>
  options.model === "embedded"
    ? EmbeddedModel.defaults.name
    : Option.getOrElse(options.modelName ?? Option.none(), () => options.model)

/**
 * The OpenAI-compatible model on the runtime's `fetch` (Node's own undici, with keep-alive), so
 * the bundled `wiz` carries no HTTP client of its own. `fetch` follows no redirect by itself:
 * `OpenAiCompatible` sends with `redirect: "manual"` and follows only a 307 or 308 to the
 * `--base-url`'s origin, so the key and the prompt never leave it.
 */
const httpModelLayer = (
  options: { readonly baseUrl: string; readonly model: string; readonly apiKey: Redacted.Redacted<string> | undefined },
  client: Layer.Layer<HttpClient.HttpClient>
) =>
  OpenAiCompatible.layer({ baseUrl: options.baseUrl, model: options.model, apiKey: options.apiKey }).pipe(
    Layer.provide(client),
    Layer.catchAll((error) => Layer.fail(usage(`--model openai-compatible: ${error.message}`)))
  )

/**
 * The OpenAI-compatible model the options name, its key read from the environment variable
 * `--api-key-env` names (a key is never a flag: flags end up in shell history and `ps`).
 */
const httpModel = Effect.fnUntraced(function*(
  options: ModelOptions,
  modelName: Option.Option<string>,
  client: Layer.Layer<HttpClient.HttpClient>
) {
  if (Option.isNone(options.baseUrl) || Option.isNone(modelName)) {
    return yield* usage("--model openai-compatible needs --base-url URL and --model-name NAME (and --api-key-env VAR if the API wants a key)")
  }
  const keyVariable = Option.getOrUndefined(options.apiKeyEnv)
  const apiKey = keyVariable === undefined ? undefined : yield* secret("--api-key-env", keyVariable)
  return {
    model: httpModelLayer({ baseUrl: options.baseUrl.value, model: modelName.value, apiKey }, client),
    provider: { baseUrl: options.baseUrl.value, apiKey }
  }
})

/** The value of a non-empty environment variable, or a usage error naming the option. */
const secret = (option: string, variable: string) =>
  Config.redacted(variable).pipe(
    Effect.filterOrFail((key) => Redacted.value(key).trim() !== "", () => undefined),
    Effect.mapError(() => usage(`${option} ${variable}: that environment variable is not set`))
  )

/**
 * The fallback tiers the options name, in order, each an OpenAI-compatible model on `client`.
 * `--fallback-base-url` and `--fallback-api-key-env` are given once for every tier or once per
 * tier (matched in order), and default to `--base-url` and `--api-key-env`. A tier's breaker
 * and budget are keyed by its name, so it is never the primary's: `NAME (fallback)`, or
 * `NAME (fallback N)` among several.
 */
const fallbackModels = Effect.fnUntraced(function*(options: ModelOptions, client: Layer.Layer<HttpClient.HttpClient>) {
  const names = options.fallbackModelName ?? []
  const urls = options.fallbackBaseUrl ?? []
  const keys = options.fallbackApiKeyEnv ?? []
  if (names.length === 0) {
    if (urls.length > 0 || keys.length > 0) {
      return yield* usage("--fallback-base-url and --fallback-api-key-env go with --fallback-model-name")
    }
    return []
  }
  for (const [option, values] of [["--fallback-base-url", urls], ["--fallback-api-key-env", keys]] as const) {
    if (values.length > 1 && values.length !== names.length) {
      return yield* usage(
        `${option}: give it once for all the fallback tiers or once per tier; ${values.length} for ${names.length} --fallback-model-name`
      )
    }
  }
  const at = (values: ReadonlyArray<string>, tier: number) => values.length === 1 ? values[0] : values[tier]
  return yield* Effect.forEach(names, (name, tier) =>
    Effect.gen(function*() {
      const baseUrl = at(urls, tier) ?? Option.getOrUndefined(options.baseUrl)
      if (baseUrl === undefined) return yield* usage("--fallback-model-name needs --fallback-base-url URL (or --base-url)")
      const keyVariable = at(keys, tier) ?? Option.getOrUndefined(options.apiKeyEnv)
      const apiKey = keyVariable === undefined ? undefined : yield* secret("--fallback-api-key-env", keyVariable)
      return yield* OpenAiCompatible.make({
        baseUrl,
        model: name,
        name: names.length === 1 ? `${name} (fallback)` : `${name} (fallback ${tier + 1})`,
        apiKey
      }).pipe(
        Effect.provide(client),
        Effect.mapError((error) => usage(`--fallback-model-name ${name}: ${error.message}`))
      )
    }))
})

/**
 * With `--redis URL`, the budgets and breakers shared through it, named after the provider and
 * a hash of its key (the simulator is named `embedded`).
 */
const sharedStore = (options: PolicyOptions, provider: SharedStore.Provider) =>
  Option.match(options.redis ?? Option.none(), {
    onNone: () => Layer.empty,
    onSome: (url) =>
      RedisStore.layer({
        url,
        provider,
        ...Option.match(options.redisTimeout ?? Option.none(), { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
      })
  })

const embeddedLayer = (options: ModelOptions): Layer.Layer<AiModel.AiModel> =>
  EmbeddedModel.layer({
    failureRate: options.failureRate,
    ...Option.match(options.seed, { onNone: () => ({}), onSome: (seed) => ({ seed }) }),
    ...Option.match(options.timeToFirstToken, { onNone: () => ({}), onSome: (timeToFirstToken) => ({ timeToFirstToken }) }),
    ...Option.match(options.perToken, { onNone: () => ({}), onSome: (perToken) => ({ perToken }) }),
    ...Option.match(Option.all({ after: options.outageAfter, lasting: options.outageFor }), {
      onNone: () => ({}),
      onSome: (outage) => ({ outage })
    }),
    ...(options.midStreamFailureRate === undefined ? {} : { midStreamFailureRate: options.midStreamFailureRate }),
    ...(options.midStreamFailure === undefined ? {} : { midStreamFailure: options.midStreamFailure }),
    ...Option.match(options.providerRpm ?? Option.none(), { onNone: () => ({}), onSome: (requestsPerMinute) => ({ requestsPerMinute }) }),
    ...Option.match(options.providerTpm ?? Option.none(), { onNone: () => ({}), onSome: (tokensPerMinute) => ({ tokensPerMinute }) }),
    ...Option.match(options.providerCapacity ?? Option.none(), { onNone: () => ({}), onSome: (capacity) => ({ capacity }) })
  })

/** The token budget `--rpm` and `--tpm` give, or the agent's default one (learning) without them. */
const tokenBudget = (options: PolicyOptions): Pick<AgentService.Options, "tokenBudget"> => {
  const requests = Option.getOrUndefined(options.rpm ?? Option.none())
  const tokens = Option.getOrUndefined(options.tpm ?? Option.none())
  if (requests === undefined && tokens === undefined) return {}
  return {
    tokenBudget: {
      limits: { ...(requests === undefined ? {} : { requests }), ...(tokens === undefined ? {} : { tokens }) },
      // as the agent's default budget: a 429 holds the budget only on a limit the provider
      // reported; one without a report holds only its own task
      probe: false,
      holdUnknown: false
    }
  }
}

/**
 * The agent the options describe, over the model they name, with `service` for what only one
 * command sets (`concurrency`, `coalesce`, `stream`, ...). Options that do not go together are
 * a {@link UsageError}, found here before anything is opened: `--base-url`, `--api-key-env` or
 * `--model-name` with the embedded model, an OpenAI-compatible model without its URL or name,
 * an `--api-key-env` variable that is not set, `--outage-after` without `--outage-for`, a
 * fallback tier without its URL. An OpenAI-compatible model (the fallback tiers too) calls on
 * `client` (default the runtime's `fetch`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = Effect.fnUntraced(function*(
  options: AgentOptions,
  service: Omit<AgentService.Options, "timeout" | "deadline" | "retry" | "breaker"> = {},
  extra: {
    /** The HTTP client of OpenAI-compatible calls (default the runtime's `fetch`). */
    readonly client?: Layer.Layer<HttpClient.HttpClient>
    /** A layer around the model, between it and the agent (`DurableBatch.journal`). */
    readonly around?: Layer.Layer<AiModel.AiModel, never, AiModel.AiModel>
  } = {}
) {
  const modelName = options.modelName ?? Option.none()
  if (options.model === "embedded" && (Option.isSome(options.baseUrl) || Option.isSome(options.apiKeyEnv))) {
    return yield* usage("--base-url and --api-key-env apply only to --model openai-compatible")
  }
  if (options.model === "embedded" && Option.isSome(modelName)) {
    return yield* usage("--model-name applies only to --model openai-compatible")
  }
  if (
    options.model !== "embedded" &&
    [options.providerRpm, options.providerTpm, options.providerCapacity].some((o) => o !== undefined && Option.isSome(o))
  ) {
    return yield* usage("--provider-rpm, --provider-tpm and --provider-capacity simulate the embedded model's limits: --model embedded only")
  }
  const client = extra.client ?? FetchHttpClient.layer
  const { model, provider }: { model: Layer.Layer<AiModel.AiModel, UsageError>; provider: SharedStore.Provider } =
    options.model === "embedded"
      ? { model: embeddedLayer(options), provider: { baseUrl: "embedded" } }
      : yield* httpModel(options, modelName, client)
  if (Option.isSome(options.outageAfter) !== Option.isSome(options.outageFor)) {
    return yield* usage("--outage-after and --outage-for go together: when the simulated outage starts and how long it lasts")
  }
  const fallbacks = yield* fallbackModels(options, client)
  const agent: Layer.Layer<AgentService.AgentService, UsageError> = AgentService.layer({
    ...tokenBudget(options),
    ...service,
    ...(fallbacks.length === 0 ? {} : { fallback: { ...service.fallback, models: [...fallbacks, ...(service.fallback?.models ?? [])] } }),
    timeout: options.timeout,
    deadline: options.deadline,
    retry: options.retries === 0 ? false : { maxAttempts: options.retries + 1 },
    ...Option.match(options.breakerOpen, {
      onNone: () => ({}),
      onSome: (openDuration) => ({ breaker: { openDuration } })
    })
  }).pipe(Layer.provide(Layer.merge(extra.around === undefined ? model : Layer.provide(extra.around, model), sharedStore(options, provider))))
  return agent
})

// -----------------------------------------------------------------------------
// command line
// -----------------------------------------------------------------------------

/**
 * A description in the "Policies" group of `--help`.
 *
 * @since 0.1.0
 * @category commands
 */
export const policy = (description: string) => CommandSpec.grouped("Policies", description)

/**
 * A description in the "Embedded model (the simulator)" group of `--help`.
 *
 * @since 0.1.0
 * @category commands
 */
export const simulator = (description: string) => CommandSpec.grouped("Embedded model (the simulator)", description)

/**
 * A description in the "Flow control" group of `--help`: how many calls, how fast, how shared.
 *
 * @since 0.1.0
 * @category commands
 */
export const flow = (description: string) => CommandSpec.grouped("Flow control", description)

/**
 * A description in the "Model" group of `--help`: which model, where, with which key.
 *
 * @since 0.1.0
 * @category commands
 */
export const modelGroup = (description: string) => CommandSpec.grouped("Model", description)

/**
 * `--model`, `--base-url`, `--model-name`, `--api-key-env`, the fallback tiers'
 * `--fallback-model-name`, `--fallback-base-url`, `--fallback-api-key-env`, and the embedded model's
 * `--failure-rate`, `--seed`, `--time-to-first-token`, `--per-token`, `--outage-after`,
 * `--outage-for`, `--provider-rpm`, `--provider-tpm`, `--provider-capacity`: spread them into a
 * command's options.
 *
 * @since 0.1.0
 * @category commands
 */
export const modelOptions = {
  model: OptionValue.choice("model", ["embedded", "openai-compatible"]).pipe(
    Options.withDescription(modelGroup("The simulator, or an OpenAI-compatible API (default embedded)")),
    Options.withDefault(defaults.model)
  ),
  baseUrl: OptionValue.optionalText("base-url", "URL", modelGroup("The API's base URL, e.g. https://api.openai.com/v1")),
  modelName: OptionValue.optionalText("model-name", "NAME", modelGroup("The model the API is asked for, e.g. gpt-4o-mini")),
  apiKeyEnv: OptionValue.optionalText("api-key-env", "VAR", modelGroup("The environment variable holding the API key")),
  fallbackModelName: Options.text("fallback-model-name").pipe(
    Options.withPseudoName("NAME"),
    Options.withDescription(modelGroup("A fallback tier: this model, after those before (repeat: a chain)")),
    Options.repeated
  ),
  fallbackBaseUrl: Options.text("fallback-base-url").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription(modelGroup("The fallbacks' API, once or per tier (default --base-url)")),
    Options.repeated
  ),
  fallbackApiKeyEnv: Options.text("fallback-api-key-env").pipe(
    Options.withPseudoName("VAR"),
    Options.withDescription(modelGroup("Their key's variable, once or per tier (default --api-key-env)")),
    Options.repeated
  ),
  failureRate: OptionValue.number("failure-rate", 0, 1).pipe(
    Options.withDescription(simulator(`Share of calls that fail, 0 to 1 (default ${defaults.failureRate})`)),
    Options.withDefault(defaults.failureRate)
  ),
  seed: OptionValue.integer("seed", Number.MIN_SAFE_INTEGER).pipe(
    Options.withDescription(simulator("Seed of its draws, for a run that repeats")),
    Options.optional
  ),
  timeToFirstToken: OptionValue.duration(
    "time-to-first-token",
    "zero",
    simulator(`Time before the first token (default ${Duration.format(EmbeddedModel.defaults.timeToFirstToken)})`)
  ),
  perToken: OptionValue.duration(
    "per-token",
    "zero",
    simulator(`Time per completion token (default ${Duration.format(EmbeddedModel.defaults.perToken)})`)
  ),
  outageAfter: OptionValue.duration("outage-after", "zero", simulator("Start an outage this long after the start")),
  outageFor: OptionValue.duration("outage-for", "positive", simulator("How long the outage lasts: every call fails")),
  providerRpm: OptionValue.optionalInteger("provider-rpm", 1, simulator("Its own limit on requests a minute (a 429 beyond)")),
  providerTpm: OptionValue.optionalInteger("provider-tpm", 1, simulator("Its own limit on tokens a minute (a 429 beyond)")),
  providerCapacity: OptionValue.optionalInteger(
    "provider-capacity",
    1,
    simulator("Calls it serves at full speed (slower beyond, Overloaded past 2x)")
  )
}

/**
 * `--retries`, `--timeout`, `--deadline`, `--breaker-open`, `--rpm`, `--tpm`: spread them into a command's
 * options. `--timeout` and `--deadline` come with their defaults applied.
 *
 * @since 0.1.0
 * @category commands
 */
export const policyOptions = {
  retries: OptionValue.integer("retries", 0).pipe(
    Options.withDescription(policy(`Retries after the first attempt (default ${defaults.retries})`)),
    Options.withDefault(defaults.retries)
  ),
  timeout: OptionValue.duration(
    "timeout",
    "positive",
    policy(`Time one attempt may take, e.g. 10s or 500ms (default ${Duration.format(defaults.timeout)})`)
  ).pipe(Options.map(Option.getOrElse(() => defaults.timeout))),
  deadline: OptionValue.duration(
    "deadline",
    "positive",
    policy(`Time one task may take in all, waits included (default ${Duration.format(defaults.deadline)})`)
  ).pipe(Options.map(Option.getOrElse(() => defaults.deadline))),
  breakerOpen: OptionValue.duration(
    "breaker-open",
    "positive",
    policy(`How long a tripped circuit breaker stays open (default ${Duration.format(CircuitBreaker.defaults.openDuration)})`)
  ),
  rpm: OptionValue.optionalInteger("rpm", 1, flow("At most N requests a minute (default: learnt from the provider)")),
  tpm: OptionValue.optionalInteger("tpm", 1, flow("At most N tokens a minute (default: learnt from the provider)")),
  redis: OptionValue.optionalText("redis", "URL", flow("Share budget and breaker via this Redis (same API and key)")),
  redisTimeout: OptionValue.duration(
    "redis-timeout",
    "positive",
    flow(`Longest wait on Redis before going on alone (default ${Duration.format(RedisStore.defaults.timeout)})`)
  )
}
