/**
 * Hedge: when an attempt has not answered within a delay, start a second copy and take the
 * first to succeed; the loser is interrupted. A budget bounds how much extra load hedging adds.
 *
 *   npx tsx examples/hedge.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Duration, Effect } from "effect"
import { Budget, Hedge } from "../src/index.js"

const program = Effect.gen(function*() {
  let start = 0
  const log = (line: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (t) => Console.log(`  ${String(t - start).padStart(3)} ms  ${line}`))

  // Room for one hedge per second, whatever the traffic, so a slow provider's load is not doubled.
  const budget = yield* Budget.make({ ratio: 0, minPerSecond: 1, window: "1 second" })
  const hedge = yield* Hedge.make({
    delay: "100 millis", // fixed here; `{ percentile: 0.95, initial: ... }` learns it from latencies
    budget,
    onHedge: ({ after }) => log(`no answer after ${Duration.format(after)}: hedge started`)
  })

  /** A call to a provider whose first copy hits a slow replica (300 ms); later copies take 50 ms. */
  const call = () => {
    let copies = 0
    return Effect.suspend(() => {
      const copy = ++copies
      const latency = copy === 1 ? 300 : 50
      return log(`copy ${copy} sent (will take ${latency} ms)`).pipe(
        Effect.zipRight(Effect.sleep(latency)),
        Effect.zipRight(log(`copy ${copy} answered`)),
        Effect.as(`answer from copy ${copy}`),
        Effect.onInterrupt(() => log(`copy ${copy} interrupted: it lost the race`))
      )
    })
  }

  for (const label of ["First call", "Second call, with the budget spent"]) {
    yield* Console.log(`${label}:`)
    start = yield* Clock.currentTimeMillis
    const answer = yield* hedge.run(call())
    yield* log(`=> ${answer}`)
  }
})

program.pipe(NodeRuntime.runMain)
