/**
 * Circuit breakers shared through Redis: when one process trips a model's breaker, every
 * process naming the same provider, key and model sees it open (for the same time), and only
 * one of them probes when it turns half-open. Built by `RedisStore`.
 *
 * Why the in-process breaker stays the judge: counting every call's outcome in Redis would
 * cost a round trip per call on the closed path, which is nearly every call. Each process
 * counts its own outcomes; what is shared is the verdict. A transition a process makes itself
 * (open, closed, isolated) is written to a hash (`state`, `until` on Redis's `TIME`) and
 * published on a channel in one script; every other process follows it (a `BreakerTransition`
 * event there too), and a process that starts later reads the hash when it first uses the
 * breaker. Half-open is not announced: every process reaches it when the shared open time
 * ends. A probe needs a lease (`SET NX PX`, one key per probe slot) that expires if its holder
 * dies; a caller waiting on a half-open circuit looks again every `pollMillis`, so a dead
 * prober delays recovery by at most the lease.
 *
 * When Redis fails, each process's breaker goes on alone (announcements are lost, a probe
 * runs without a lease under `onStoreError: "local"`; under `"fail"` it is refused).
 *
 * @internal
 */
import { Duration, Effect, Runtime } from "effect"
import type { Scope } from "effect"
import type { Redis } from "ioredis"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import { command, type Health } from "./RedisBudget.js"
import type { OnStoreError, StoreUnavailable } from "./SharedStore.js"

/** KEYS: state hash. ARGV: to, open ms, message (JSON without `remaining`), channel. */
const announceScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local to, open = ARGV[1], tonumber(ARGV[2])
local remaining = 0
if to == 'Open' then
  local current = redis.call('HMGET', KEYS[1], 'state', 'until')
  if current[1] == 'Open' and tonumber(current[2]) >= now + open then return 0 end
  remaining = open
end
redis.call('HSET', KEYS[1], 'state', to, 'until', now + remaining)
redis.call('PEXPIRE', KEYS[1], remaining + 86400000)
local message = cjson.decode(ARGV[3])
message.remaining = remaining
redis.call('PUBLISH', ARGV[4], cjson.encode(message))
return 1
`

/** KEYS: state hash. Returns the state and the time left of an open one. */
const readScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('HMGET', KEYS[1], 'state', 'until')
if not current[1] then return {} end
return {current[1], math.max(0, tonumber(current[2]) - now)}
`

/** KEYS: probe slot keys. ARGV: holder, lease ms. Returns the slot taken (1-based), or 0. */
const probeScript = `
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then return i end
end
return 0
`

/** KEYS: probe slot key. ARGV: holder. Frees the slot if it is still the holder's. */
const releaseScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

interface Scripts {
  wizAnnounce(key: string, to: string, open: number, message: string, channel: string): Promise<number>
  wizBreakerRead(key: string): Promise<[] | [string, number]>
  wizProbe(numberOfKeys: number, ...args: Array<string | number>): Promise<number>
  wizProbeRelease(key: string, holder: string): Promise<number>
}

/** Teaches `client` the breaker's scripts (as the budget's) and returns them, typed. */
const defineScripts = (client: Redis): Scripts => {
  client.defineCommand("wizAnnounce", { numberOfKeys: 1, lua: announceScript })
  client.defineCommand("wizBreakerRead", { numberOfKeys: 1, lua: readScript })
  client.defineCommand("wizProbe", { lua: probeScript })
  client.defineCommand("wizProbeRelease", { numberOfKeys: 1, lua: releaseScript })
  // defineCommand adds each script as a method at run time, where ioredis's types cannot see it
  return client as unknown as Scripts
}

/** @internal */
export interface Settings {
  readonly client: Redis
  /** A second connection, for the channel (a subscribed connection sends nothing else). */
  readonly subscriber: Redis
  /** The shared name of a breaker by its local key (`SharedStore.identity`). */
  readonly nameOf: (key: string) => string
  readonly channel: string
  readonly processId: string
  readonly onStoreError: OnStoreError
  /** How long a probe's lease lasts if its holder never frees it. */
  readonly lease: Duration.Duration
  readonly shared: Health
}

interface Message {
  readonly name: string
  readonly to: CircuitBreaker.State
  readonly origin: string
  readonly remaining: number
}

let probes = 0

/**
 * Keyed breakers linked through Redis. The channel's subscription ends with the scope.
 *
 * @internal
 */
export const make = (
  settings: Settings,
  options: CircuitBreaker.KeyedOptions
): Effect.Effect<CircuitBreaker.Keyed, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { channel, client, processId, shared, subscriber } = settings
    const scripts = defineScripts(client)
    const runtime = yield* Effect.runtime<never>()
    const run = Runtime.runFork(runtime)
    const keys = new Map<string, string>() // shared name -> local key
    const slots = options.halfOpen?.probes ?? CircuitBreaker.defaults.halfOpen.probes
    const leaseMillis = Duration.toMillis(settings.lease)

    /** A Redis step: marks the store's health; `fallback` when it fails. */
    const onRedis = <A>(redis: Effect.Effect<A, StoreUnavailable>, fallback: A) =>
      Effect.clockWith((clock) =>
        shared.tryShared(clock.unsafeCurrentTimeMillis())
          ? Effect.matchEffect(redis, {
            onSuccess: (value) => Effect.sync(() => (shared.answered(), value)),
            onFailure: (error) => Effect.sync(() => (shared.failed(clock.unsafeCurrentTimeMillis(), error), fallback))
          })
          : Effect.succeed(fallback)
      )

    const link = (key: string): CircuitBreaker.Link => {
      const name = settings.nameOf(key)
      keys.set(name, key)
      return {
        pollMillis: Math.min(leaseMillis, 1_000),
        announce: (transition) => {
          const open = transition.until === undefined ? 0 : Math.max(0, transition.until - transition.at)
          const message = JSON.stringify({ name, to: transition.to, origin: processId })
          run(onRedis(command("announce", () => scripts.wizAnnounce(`${name}:breaker`, transition.to, open, message, channel)), 0))
        },
        probe: Effect.suspend(() => {
          const holder = `${processId}:${++probes}`
          const slotKeys = Array.from({ length: slots }, (_, i) => `${name}:probe:${i + 1}`)
          const taken = command("probe", () => scripts.wizProbe(slots, ...slotKeys, holder, leaseMillis))
          // Without Redis: probe locally ("local"), or refuse the probe ("fail").
          return Effect.map(onRedis(taken, settings.onStoreError === "local" ? -1 : 0), (slot) =>
            slot === 0
              ? undefined
              : slot < 0
              ? Effect.void
              : onRedis(command("probe release", () => scripts.wizProbeRelease(slotKeys[slot - 1]!, holder)), 0))
        })
      }
    }

    const keyed = yield* CircuitBreaker.makeKeyedLinked(options, link)

    const onMessage = (from: string, text: string) => {
      if (from !== channel) return
      const message = JSON.parse(text) as Message
      const key = keys.get(message.name)
      if (message.origin === processId || key === undefined) return
      run(keyed.follow(key, message.to, message.remaining))
    }
    // The subscriber queues its commands while it is not connected, and subscribes again after
    // a reconnection by itself; until then this process hears nothing and goes on alone.
    // Waited for (at most the client's `commandTimeout`), so that a transition announced right after this returns
    // is heard.
    // Subscribed again at each (re)connection of the subscriber: one that failed while Redis was
    // away is retried then. Its own connection says nothing of the commands' one, so neither
    // its failure nor its success changes the store's health.
    const subscribe = Effect.catchTag(command("subscribe", () => subscriber.subscribe(channel)), "StoreUnavailable", () => Effect.void)
    const onReady = () => void run(subscribe)
    yield* Effect.acquireRelease(
      Effect.zipRight(
        Effect.sync(() => {
          subscriber.on("message", onMessage)
          subscriber.on("ready", onReady)
        }),
        subscribe
      ),
      () =>
        Effect.sync(() => {
          subscriber.off("message", onMessage)
          subscriber.off("ready", onReady)
        })
    )

    /** A breaker's first use here: take the state other processes left in Redis. */
    const joined = new Set<string>()
    const join = (key: string) =>
      Effect.suspend(() => {
        if (joined.has(key)) return Effect.void
        joined.add(key)
        const name = settings.nameOf(key)
        keys.set(name, key)
        return Effect.flatMap(onRedis(command("read", () => scripts.wizBreakerRead(`${name}:breaker`)), []), (found) =>
          found.length === 0 || found[0] === "HalfOpen" || (found[0] === "Open" && Number(found[1]) <= 0)
            ? Effect.void
            : keyed.follow(key, found[0] as CircuitBreaker.State, Number(found[1])))
      })

    const linked: CircuitBreaker.Keyed = {
      ...keyed,
      get: (key) => Effect.zipRight(join(key), keyed.get(key))
    }
    return linked
  })
