/**
 * EventBus: typed agent events on a bus whose subscribers cannot hurt each other or the
 * publisher. A throwing handler, a stalled subscriber with a small buffer, `emitAndAwait`
 * reporting every handler's outcome, and the events as JSON Lines.
 *
 *   npx tsx examples/event-bus.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Logger, LogLevel, Stream } from "effect"
import { AgentEvent, EventBus } from "../src/index.js"

const program = Effect.gen(function*() {
  const bus = yield* EventBus.EventBus

  // The seed's EventEmitter ran listeners inside `emit`: this one would have broken the emitter.
  // Here its failures are logged (as a warning, with the cause) and counted, and it goes on.
  const buggy = yield* bus.on("TaskFinished", (event) => {
    if (event.taskId === "t3" || event.taskId === "t6") throw new Error(`listener bug on ${event.taskId}`)
    return Effect.void
  }, { name: "buggy" })
  yield* bus.on("TaskFinished", (event) => Console.log(`  [audit] ${event.taskId} ${event.status}`), {
    name: "audit",
    strategy: "suspend" // every event must reach it: the publisher waits rather than drop one
  })
  // Nobody reads this one: with 2 slots it keeps the newest two and counts what it dropped.
  const stalled = yield* bus.subscription({ capacity: 2, strategy: "sliding" })
  // For an events file: every event, kept until read.
  const log = yield* bus.subscribe({ strategy: "suspend" })

  console.log("Publishing five tasks' events; a handler throws on t3:")
  for (const id of ["t1", "t2", "t3", "t4", "t5"]) {
    yield* bus.publish(new AgentEvent.TaskStarted({ taskId: id }))
    // Publishers that build events only when someone listens (cheap when nobody does):
    if (bus.wants("TaskFinished")) {
      yield* bus.publish(new AgentEvent.TaskFinished({ taskId: id, status: "succeeded", attempts: 1, durationMs: 12 }))
    }
  }

  console.log("emitAndAwait: wait for every TaskFinished handler and report each outcome:")
  const outcomes = yield* bus.emitAndAwait(
    new AgentEvent.TaskFinished({ taskId: "t6", status: "failed", attempts: 3, durationMs: 90 })
  )
  for (const outcome of outcomes) console.log(`  ${outcome.handler}: ${outcome._tag}`)
  console.log(`the buggy handler failed ${yield* buggy.failures} times and handled ${yield* buggy.handled}; the publisher never noticed`)
  console.log(`the stalled subscriber dropped ${yield* stalled.dropped} events (exactly), kept the newest:`)
  const kept = yield* Stream.runCollect(Stream.take(stalled.stream, 2))
  for (const event of kept) console.log(`  ${event._tag}${"taskId" in event ? ` ${event.taskId}` : ""}`)
  console.log("the first three lines of an events file (JSON Lines, encoded with the events' schema):")
  yield* AgentEvent.jsonLines(Stream.take(log, 3)).pipe(Stream.runForEach((line) => Console.log(`  ${line.trimEnd()}`)))
}).pipe(Effect.scoped, Effect.provide(EventBus.layer()), Logger.withMinimumLogLevel(LogLevel.Error))

program.pipe(Effect.catchAllCause(Effect.logError), NodeRuntime.runMain)
