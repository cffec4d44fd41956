/**
 * The gateway's own clients: each with a key it sends as `Authorization: Bearer <key>`, a name
 * that logs and metrics use instead of the key, and its own limits on requests and tokens per
 * minute. A request over its client's limit is refused at once with a 429 whose `retry-after`
 * is when the client's budget will hold it again, and every answer carries the client's
 * `x-ratelimit-*` headers in OpenAI's format, so a client's own SDK paces itself.
 *
 * Why a module of its own: a gateway bound anywhere but loopback must know who is calling
 * before it spends the upstream's budget on them, and a client's budget is its own, apart
 * from the upstream's (`AgentService`'s token budget) that all clients share.
 *
 * Keys are compared by their SHA-256 digest (a map lookup on the digest, so the time taken
 * says nothing of how much of a wrong key matched) and never kept or printed in the clear.
 *
 * @example
 * ```ts
 * import { Effect, Either } from "effect"
 * import { ClientKeys } from "wiz-effect"
 *
 * const keys = ClientKeys.parse('[{"key":"sk-team-a-0123456789","name":"team-a","rpm":60,"tpm":100000}]')
 * const program = Effect.gen(function*() {
 *   const clients = yield* ClientKeys.make(Either.getOrThrow(keys))
 *   return clients.authenticate("Bearer sk-team-a-0123456789")?.name // "team-a"
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Data, Duration, Effect, Either, Redacted } from "effect"
import { createHash } from "node:crypto"
import * as TokenBudget from "../policy/TokenBudget.js"

/**
 * One client: its key, its name, and its limits per minute (absent: not limited).
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientKey {
  readonly key: Redacted.Redacted<string>
  readonly name: string
  readonly requestsPerMinute?: number
  readonly tokensPerMinute?: number
}

/**
 * A client's request went over its limits: come back after `retryAfter`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ClientLimited extends Data.TaggedError("ClientLimited")<{
  readonly client: string
  readonly limit: "requests" | "tokens"
  readonly retryAfter: Duration.Duration
  readonly headers: Readonly<Record<string, string>>
}> {
  override get message(): string {
    return `client ${this.client} is over its ${this.limit} per minute; retry after ${Duration.format(this.retryAfter)}`
  }
}

/**
 * A known client, with what it may spend.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client {
  readonly name: string
  /**
   * Takes `cost` from the client's budget, or fails at once with {@link ClientLimited}; the
   * reservation settles with the real usage when the answer ends (`settle`).
   */
  readonly admit: (cost: TokenBudget.Cost) => Effect.Effect<TokenBudget.Reservation | undefined, ClientLimited>
  /** The client's `x-ratelimit-*` headers as its budget is now. */
  readonly headers: Effect.Effect<Record<string, string>>
}

/**
 * The clients of one gateway.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientKeys {
  /** The client an `Authorization` header names, or undefined for none or a wrong key. */
  readonly authenticate: (authorization: string | undefined) => Client | undefined
}

const digest = (key: string): string => createHash("sha256").update(key).digest("hex")

/** OpenAI's reset format: `1s`, `6m0s`, `250ms`. */
const resetText = (seconds: number): string => {
  if (seconds < 1) return `${Math.max(0, Math.ceil(seconds * 1000))}ms`
  const whole = Math.ceil(seconds)
  return whole < 60 ? `${whole}s` : `${Math.floor(whole / 60)}m${whole % 60}s`
}

const names = { requests: "requests", tokens: "tokens" } as const

const headersOf = (state: TokenBudget.State): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (const dimension of ["requests", "tokens"] as const) {
    const at = state.dimensions[dimension]
    if (at === undefined) continue
    const name = names[dimension]
    headers[`x-ratelimit-limit-${name}`] = String(Math.round(at.capacity))
    headers[`x-ratelimit-remaining-${name}`] = String(Math.max(0, Math.floor(at.available)))
    headers[`x-ratelimit-reset-${name}`] = resetText((at.capacity - at.available) / at.perSecond)
  }
  return headers
}

/**
 * The clients `keys` lists, each with a budget of its own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (keys: ReadonlyArray<ClientKey>): Effect.Effect<ClientKeys> =>
  Effect.gen(function*() {
    const byDigest = new Map<string, Client>()
    for (const key of keys) {
      const limits = {
        ...(key.requestsPerMinute === undefined ? {} : { requests: key.requestsPerMinute }),
        ...(key.tokensPerMinute === undefined ? {} : { tokens: key.tokensPerMinute })
      }
      const limited = Object.keys(limits).length > 0
      const budget = limited ? yield* TokenBudget.make({ limits, probe: false, holdUnknown: false }) : undefined
      const client: Client = {
        name: key.name,
        admit: (cost) =>
          budget === undefined ? Effect.succeed(undefined) : Effect.flatMap(budget.state, (state) => {
            // Refuse at once what does not fit now: a client's own excess waits at its end, not ours.
            let wait = 0
            let limit: "requests" | "tokens" = "requests"
            for (const dimension of ["requests", "tokens"] as const) {
              const at = state.dimensions[dimension]
              const needed = cost[dimension] ?? 0
              if (at === undefined || needed <= at.available) continue
              const seconds = needed > at.capacity ? Number.POSITIVE_INFINITY : (needed - at.available) / at.perSecond
              if (seconds > wait) {
                wait = seconds
                limit = dimension
              }
            }
            if (wait > 0 || state.waiting > 0) {
              return Effect.fail(
                new ClientLimited({
                  client: key.name,
                  limit,
                  retryAfter: Number.isFinite(wait) ? Duration.seconds(Math.max(1, Math.ceil(wait))) : Duration.minutes(1),
                  headers: headersOf(state)
                })
              )
            }
            return Effect.orDie(budget.reserve(cost))
          }),
        headers: budget === undefined ? Effect.succeed({}) : Effect.map(budget.state, headersOf)
      }
      byDigest.set(digest(Redacted.value(key.key)), client)
    }
    return {
      authenticate: (authorization) => {
        const match = authorization === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(authorization)
        return match === null ? undefined : byDigest.get(digest(match[1]!))
      }
    }
  })

/**
 * Client keys from text (an environment variable's, a file's): a JSON array of
 * `{ "key", "name", "rpm", "tpm" }` (`name` defaults to `client-N`, `rpm` and `tpm` to no
 * limit). Keys must be at least 16 characters and unique.
 *
 * @since 0.1.0
 * @category decoding
 */
export const parse = (text: string): Either.Either<ReadonlyArray<ClientKey>, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left("client keys: not JSON (expected [{\"key\": \"...\", \"name\": \"...\", \"rpm\": 60, \"tpm\": 100000}])")
  }
  if (!Array.isArray(json) || json.length === 0) return Either.left("client keys: expected a non-empty JSON array")
  const keys: Array<ClientKey> = []
  const seen = new Set<string>()
  for (const [i, entry] of json.entries()) {
    if (typeof entry !== "object" || entry === null) return Either.left(`client keys: entry ${i} is not an object`)
    const { key, name, rpm, tpm } = entry as Record<string, unknown>
    if (typeof key !== "string" || key.length < 16) {
      return Either.left(`client keys: entry ${i}: key must be a string of at least 16 characters`)
    }
    if (seen.has(key)) return Either.left(`client keys: entry ${i}: a key listed twice`)
    seen.add(key)
    for (const [field, value] of [["rpm", rpm], ["tpm", tpm]] as const) {
      if (value !== undefined && !(typeof value === "number" && Number.isInteger(value) && value > 0)) {
        return Either.left(`client keys: entry ${i}: ${field} must be a positive integer`)
      }
    }
    keys.push({
      key: Redacted.make(key),
      name: typeof name === "string" && name !== "" ? name : `client-${i + 1}`,
      ...(typeof rpm === "number" ? { requestsPerMinute: rpm } : {}),
      ...(typeof tpm === "number" ? { tokensPerMinute: tpm } : {})
    })
  }
  return Either.right(keys)
}
