/**
 * Progress: counts, rate and ETA for a batch run (the seed's processWithProgress reported a bare
 * percentage, one task at a time), drawn on a terminal: one line redrawn in place on a TTY, a plain
 * line now and then otherwise, and log lines written *around* it so the two never interleave.
 * Ten of the thirty tasks were "answered by an earlier run": they count as done but not in the
 * rate, so the ETA stays honest.
 *
 *   npx tsx examples/progress.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import * as Terminal from "@effect/platform/Terminal"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option, Stream } from "effect"
import { AgentService, AgentTask, EmbeddedModel, Progress } from "../src/index.js"

// Progress goes to stderr, as a CLI's does; the Terminal only needs to display.
const stderr = Layer.succeed(
  Terminal.Terminal,
  Progress.outputTerminal({
    display: (text) => Effect.sync(() => void process.stderr.write(text)),
    isTTY: process.stderr.isTTY === true,
    columns: process.stderr.columns ?? 0
  })
)

const tasks = Array.from({ length: 30 }, (_, i) =>
  new AgentTask.AgentTask({ id: `t${i + 1}`, prompt: `Summarise task ${i + 1}: progress shows counts, rate and time left.` }))

const program = Effect.gen(function*() {
  const progress = yield* Progress.Progress
  const agent = yield* AgentService.AgentService
  yield* progress.setTotal(tasks.length)
  // On a TTY the default redraw is every 100 ms; plain lines every 5 s, here 200 ms to show a few.
  const screen = yield* Progress.renderer({ interval: process.stderr.isTTY ? "100 millis" : "200 millis" })

  yield* progress.skipped(10)
  yield* screen.log("resumed: 10 tasks already answered")
  // Retries come from the agent's events; starts and ends from the work itself.
  yield* (yield* agent.subscribe).pipe(
    Stream.runForEach((event) => event._tag === "RetryScheduled" ? progress.retried : Effect.void),
    Effect.forkScoped
  )
  yield* Stream.fromIterable(tasks.slice(10)).pipe(
    Stream.mapEffect((task) => Effect.either(progress.track(agent.process(task))), { concurrency: 6 }),
    Stream.runForEach((result) =>
      result._tag === "Left" ? screen.log(`failed: ${result.left.id} (${result.left.error._tag})`) : Effect.void
    )
  )
  const last = yield* progress.snapshot
  yield* screen.log(
    `done: ${last.succeeded} succeeded, ${last.failed} failed, ${last.skipped} resumed, ` +
      `${Option.getOrElse(Option.map(last.perSecond, (r) => r.toFixed(1)), () => "--")} tasks/s this run`
  )
}).pipe(
  Effect.scoped,
  Effect.provide(AgentService.layer({ concurrency: 6, retry: { maxAttempts: 2, base: "20 millis" }, timeout: "200 millis" })),
  Effect.provide(EmbeddedModel.layer({ seed: 3, timeToFirstToken: "40 millis", perToken: "1 millis", failureRate: 0.15, faults: { overloaded: 1 } })),
  Effect.provide(Progress.layer()),
  Effect.provide(stderr)
)

program.pipe(NodeRuntime.runMain)
