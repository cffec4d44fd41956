/**
 * Debounce: a burst of calls merges into one run with the latest arguments, every caller gets
 * that run's answer, a failure does not jam it (the seed's `debounce` used the first call's
 * arguments and hung forever after one rejection), and `maxWait` bounds the wait.
 *
 *   npx tsx examples/debounce.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect } from "effect"
import { Debounce } from "../src/index.js"

const program = Effect.gen(function*() {
  const start = yield* Clock.currentTimeMillis
  const elapsed = Effect.map(Clock.currentTimeMillis, (t) => `${String(t - start).padStart(3)} ms`)
  let runs = 0
  // "suggest a completion for the draft": the first run fails, as a flaky model would
  const suggest = (draft: string) =>
    Effect.flatMap(elapsed, (at) => {
      runs++
      return runs === 1
        ? Effect.fail(`model unavailable (run ${runs} at ${at}, draft "${draft}")`)
        : Effect.succeed(`suggestion for "${draft}" (run ${runs} at ${at})`)
    })
  const debounced = yield* Debounce.make(suggest, { delay: "40 millis", maxWait: "150 millis" })

  // A user types "Sum" one key every 10 ms: one run, 40 ms after the last key, with "Sum".
  const typing = (word: string) =>
    Effect.forEach(
      word.split("").map((_, i) => word.slice(0, i + 1)),
      (draft, i) => Effect.zipRight(Effect.sleep(`${10 * i} millis`), Effect.either(debounced(draft))),
      { concurrency: "unbounded" }
    )
  const first = yield* typing("Sum")
  yield* Console.log(`3 keystrokes, every caller got: ${first.map((e) => e._tag === "Left" ? e.left : e.right)[0]}`)

  // After that failure the next burst runs normally.
  const second = yield* typing("Summ")
  yield* Console.log(`4 keystrokes, every caller got: ${second.map((e) => e._tag === "Left" ? e.left : e.right)[0]}`)

  // Typing without a pause for 300 ms: maxWait (150 ms) still makes a run every 150 ms.
  const steady = yield* Effect.forEach(
    Array.from({ length: 30 }, (_, i) => i),
    (i) => Effect.zipRight(Effect.sleep(`${10 * i} millis`), debounced(`draft ${i}`)),
    { concurrency: "unbounded" }
  )
  yield* Console.log(`30 keystrokes over 300 ms without a pause: ${new Set(steady).size} runs`)
  for (const answer of new Set(steady)) yield* Console.log(`  ${answer}`)
})

program.pipe(NodeRuntime.runMain)
