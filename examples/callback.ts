/**
 * Callback interop: Node-style callbacks and AbortSignal promises into Effects whose
 * interruption cancels the work, with typed errors; and Effects handed back to Promise and
 * callback code. A callback called twice is ignored and reported, not a crash.
 *
 *   npx tsx examples/callback.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schema } from "effect"
import * as fs from "node:fs"
import { setTimeout as sleep } from "node:timers/promises"
import { Callback } from "../src/index.js"

class ReadFailed extends Schema.TaggedError<ReadFailed>()("ReadFailed", { path: Schema.String, reason: Schema.String }) {}
class Aborted extends Schema.TaggedError<Aborted>()("Aborted", { reason: Schema.String }) {}

// A Node-style API with an AbortSignal: interruption aborts the read.
const readFile = (path: string) =>
  Callback.async<string, ReadFailed>(
    (callback, signal) => fs.readFile(path, { encoding: "utf8", signal }, callback),
    { name: "fs.readFile", onError: (error) => new ReadFailed({ path, reason: (error as NodeJS.ErrnoException).code ?? String(error) }) }
  )

// A plain Node-style function `(path, callback)`.
const stat = Callback.fromNode(
  (path: string, callback: Callback.NodeCallback<fs.Stats>) => fs.stat(path, callback),
  { name: "fs.stat", onError: (error) => new ReadFailed({ path: "?", reason: String(error) }) }
)

// A Promise API taking an AbortSignal: a slow "model call" of 5 seconds.
let lastSignal: AbortSignal | undefined
const slowCall = Callback.fromPromise(
  (prompt: string, signal: AbortSignal) => {
    lastSignal = signal
    return sleep(5000, `answer to ${prompt}`, { signal })
  },
  { onError: (error) => new Aborted({ reason: String(error) }) }
)

const program = Effect.gen(function*() {
  const text = yield* readFile("examples/tasks.jsonl")
  yield* Console.log(`fs.readFile: ${text.split("\n").filter(Boolean).length} lines`)
  const missing = yield* Effect.flip(readFile("no/such/file"))
  yield* Console.log(`fs.readFile of a missing file fails typed: ${missing._tag} ${missing.reason}`)
  yield* Console.log(`fs.stat: ${(yield* stat("examples/tasks.jsonl")).size} bytes`)

  // A timeout interrupts the Effect, which aborts the promise's signal: the work stops.
  const timedOut = yield* Effect.either(Effect.timeout(slowCall("hello"), "20 millis"))
  yield* Console.log(`a 5 s call under a 20 ms timeout: ${timedOut._tag === "Left" ? timedOut.left._tag : "answered"}; its signal aborted: ${lastSignal?.aborted}`)

  // An API that calls back twice: the first call counts; the second is logged as a warning.
  const twice = yield* Callback.async<string, Aborted>((callback) => {
    callback(null, "first answer")
    callback(null, "second answer")
  }, { name: "twice-api", onError: (error) => new Aborted({ reason: String(error) }) })
  yield* Console.log(`an API that called back twice answered: ${twice}`)

  // The other way: Effects run for Promise and callback code, in this runtime.
  const run = yield* Callback.runner()
  const fromPromiseCode = yield* Effect.promise(() => run.runPromise(Effect.succeed("value for promise code")))
  yield* Console.log(`runPromise: ${fromPromiseCode}`)
  const abortedRun = yield* Effect.promise(() =>
    run.runPromise(Effect.as(Effect.sleep("5 seconds"), "too slow"), { signal: AbortSignal.timeout(20) }).catch(
      (error: unknown) => `rejected: ${(error as Error).name}`
    )
  )
  yield* Console.log(`runPromise with AbortSignal.timeout(20): ${abortedRun}`)
  const nodeStyle = run.toNode((n: number) => Effect.succeed(n * 2))
  const doubled = yield* Effect.async<number>((resume) => {
    nodeStyle(21, (error, value) => resume(error === null ? Effect.succeed(value!) : Effect.die(error)))
  })
  yield* Console.log(`toNode: callback(null, ${doubled})`)
})

program.pipe(NodeRuntime.runMain)
