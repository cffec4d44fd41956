/**
 * Waiting for a `TestClock` timer that real I/O arms: a test forks a call that talks to a
 * loopback server, and the call's timeout sleep is registered only once bytes have come and
 * gone. `awaitTimer(after)` yields to Node's event loop (no timer, no real sleep), in a bounded
 * loop, until a sleep is due `after` from now on the TestClock; then `TestClock.adjust(after)`
 * fires it exactly.
 */
import { Chunk, Clock, Duration, Effect, TestClock } from "effect"

const tick = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** Waits until a TestClock sleep is due `after` from now, dying after `maxTicks` event-loop turns. */
export const awaitTimer = (after: Duration.DurationInput, maxTicks = 50_000): Effect.Effect<void> =>
  Effect.gen(function*() {
    const at = (yield* Clock.currentTimeMillis) + Duration.toMillis(after)
    for (let i = 0; i < maxTicks; i++) {
      const sleeps = yield* TestClock.sleeps()
      if (Chunk.some(sleeps, (wake) => wake === at)) return
      yield* tick
    }
    const sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
    return yield* Effect.dieMessage(`no TestClock timer due at ${at} (pending: ${sleeps.join(", ") || "none"})`)
  })
