/**
 * Where the state that several processes may share lives: each model's token budget and the
 * circuit breakers. `AgentService` (through `Policies`) asks the `SharedStore` in context for
 * them; without one it uses {@link memory}, which is exactly the in-process `TokenBudget.make`
 * and `CircuitBreaker.makeKeyed` of before (same speed, exact under `TestClock`). A store shared
 * by every process that spends one API key (`RedisStore.layer`) makes N processes spend one
 * provider quota, not N of them, and trip one breaker.
 *
 * Why a Tag with two factories, not a key-value interface: the in-memory budget is a queue of
 * fibers over plain numbers (no round trip, no serialization), and the shared one is a script
 * that takes every dimension at once on the store's own clock. The two share the `TokenBudget`
 * and `CircuitBreaker` interfaces, so nothing above them knows which one runs.
 *
 * A shared store says how it is doing through {@link Hooks.onStatus}: `Policies` turns that into
 * a `StoreStatus` event and the `wiz_store_fallbacks_total` metric.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { AgentService } from "wiz-effect"
 * import * as RedisStore from "wiz-effect/store/RedisStore"
 *
 * // every replica that names the same Redis, provider and key shares one budget and breaker
 * const agent = AgentService.layer({ concurrency: 16 }).pipe(
 *   Layer.provide(RedisStore.layer({ url: "redis://127.0.0.1:6379", provider: { baseUrl, apiKey } }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Context, Effect, Redacted, Schema } from "effect"
import type { Scope } from "effect"
import { createHash } from "node:crypto"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as TokenBudget from "../policy/TokenBudget.js"

/**
 * The store could not be reached, or did not answer in time. Under `onStoreError: "local"`
 * (the default) nobody sees it: the budget and breaker go on in the process. Under `"fail"` the
 * call that needed the store fails with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  store: Schema.String,
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.store} unavailable during ${this.operation}: ${this.reason}`
  }
}

/**
 * Whether the state is shared now (`"shared"`), or the process went on alone because the store
 * failed (`"local"`, with the reason).
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly mode: "shared" | "local"
  readonly store: string
  readonly reason?: string
}

/**
 * What a store tells whoever made the budget or breaker.
 *
 * @since 0.1.0
 * @category models
 */
export interface Hooks {
  /** At each change between shared and local, once per change. */
  readonly onStatus?: (status: Status) => void
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** A store's name, for events and errors (`memory`, `redis`). */
  readonly name: string
  /** The token budget of `model` (every process naming the same model and provider shares it). */
  readonly budget: (
    model: string,
    options: TokenBudget.Options,
    hooks?: Hooks
  ) => Effect.Effect<TokenBudget.TokenBudget<StoreUnavailable>, never, Scope.Scope>
  /** The keyed breakers (one per model). */
  readonly breakers: (
    options: CircuitBreaker.KeyedOptions,
    hooks?: Hooks
  ) => Effect.Effect<CircuitBreaker.Keyed, never, Scope.Scope>
  /** Processes that used the store in the last few seconds, this one included; 1 in memory. */
  readonly processes: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SharedStore extends Context.Tag("wiz-effect/SharedStore")<SharedStore, Service>() {}

/**
 * The in-process store: what `AgentService` uses when no store is in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const memory: Service = {
  name: "memory",
  budget: (_model, options) => TokenBudget.make(options),
  breakers: (options) => CircuitBreaker.makeKeyed(options),
  processes: Effect.succeed(1)
}

/**
 * What to do when the store fails: go on in the process (`"local"`, the default; back to the
 * store as soon as it answers), or fail the call with {@link StoreUnavailable} (`"fail"`).
 *
 * @since 0.1.0
 * @category models
 */
export type OnStoreError = "local" | "fail"

/**
 * Who spends the quota: the provider's base URL, and a hash of the API key (never the key).
 *
 * @since 0.1.0
 * @category models
 */
export interface Provider {
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted<string> | string | undefined
}

const digest = (text: string, length: number): string => createHash("sha256").update(text).digest("hex").slice(0, length)

/**
 * The shared name of one model's state: the user's `prefix`, the provider's base URL and a
 * hash of its API key, and the model. Two apps on one store with different keys (or different
 * providers, or prefixes) never share a budget; the key itself never reaches the store. The
 * provider part is in braces, so on a Redis Cluster every key of it lives on one slot.
 *
 * @example
 * ```ts
 * identity("wiz", { baseUrl: "https://api.openai.com/v1", apiKey }, "gpt-4o-mini")
 * // "wiz:{3f2a…:9b1c…}:gpt-4o-mini"
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const identity = (prefix: string, provider: Provider | undefined, model: string): string => {
  const key = provider?.apiKey === undefined
    ? ""
    : typeof provider.apiKey === "string"
    ? provider.apiKey
    : Redacted.value(provider.apiKey)
  const url = provider?.baseUrl.replace(/\/+$/, "") ?? ""
  return `${prefix}:{${digest(url, 12)}:${key === "" ? "nokey" : digest(key, 16)}}:${model}`
}
