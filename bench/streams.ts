/**
 * Streams and events: what `StreamingAnswer` adds per chunk over reading the model's stream
 * directly; events per second through the `EventBus` with 1, 10 and 100 subscribers (against
 * Effect's `PubSub` and Node's `EventEmitter` in the same run); and what publishing costs when
 * nobody listens (time, and bytes allocated per publish in a child process whose young
 * generation is large enough that no collection runs during the count).
 *
 *   npx tsx bench/streams.ts
 *
 * Numbers are medians of repeated rounds; the model answers at once, so every microsecond is
 * the library's.
 */
import { execFileSync } from "node:child_process"
import { EventEmitter } from "node:events"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { Effect, Fiber, PubSub, Scope, Stream } from "effect"
import { AgentEvent, AgentService, AgentTask, AiModel, EventBus, StreamingAnswer, Timeout } from "../src/index.js"

const rounds = 7
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** µs per unit: the median over `rounds` of `run` (after one warm-up run), divided by `units`. */
const perUnit = async (units: number, run: () => Promise<unknown>) => {
  await run()
  const samples: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    const start = performance.now()
    await run()
    samples.push(((performance.now() - start) * 1000) / units)
  }
  return median(samples)
}

// -----------------------------------------------------------------------------
// allocation per publish with no subscriber (child process)
// -----------------------------------------------------------------------------

if (process.argv.includes("--allocation")) {
  const n = 200_000
  const bus = Effect.runSync(Effect.flatMap(Scope.make(), (scope) => Scope.extend(EventBus.make(), scope)))
  const event = new AgentEvent.TaskStarted({ taskId: "t" }, true)
  const measure = (run: () => void): number => {
    run() // warm up
    ;(globalThis as { gc?: () => void }).gc?.()
    const before = process.memoryUsage().heapUsed
    run()
    return Math.max(0, (process.memoryUsage().heapUsed - before) / n)
  }
  const guarded = () => {
    for (let i = 0; i < n; i++) if (bus.wants("TaskStarted")) bus.unsafePublish(new AgentEvent.TaskStarted({ taskId: "t" }, true))
  }
  const unsafe = () => {
    for (let i = 0; i < n; i++) bus.unsafePublish(event)
  }
  const building = () => {
    for (let i = 0; i < n; i++) bus.unsafePublish(new AgentEvent.TaskStarted({ taskId: "t" }, true))
  }
  const effect = () => {
    for (let i = 0; i < n; i++) bus.publish(event)
  }
  console.log(JSON.stringify({
    guarded: measure(guarded),
    unsafe: measure(unsafe),
    building: measure(building),
    effect: measure(effect)
  }))
  process.exit(0)
}

// -----------------------------------------------------------------------------
// cases
// -----------------------------------------------------------------------------

const usage = new AiModel.Usage({ promptTokens: 1, completionTokens: 1 })
const chunksPerAnswer = 1000
const deltas = Array.from({ length: chunksPerAnswer }, (_, i) =>
  i === chunksPerAnswer - 1
    ? new AiModel.CompletionChunk({ delta: " end", finishReason: "stop", usage })
    : new AiModel.CompletionChunk({ delta: " word" }))
/** A model that streams 1,000 chunks at once, one chunk per pull: the worst case for any per-chunk cost. */
const instantModel = AiModel.make({
  name: "instant",
  stream: () => Stream.mapEffect(Stream.fromIterable(deltas), Effect.succeed)
})
/** The same, each chunk arriving from the event loop (`setImmediate`), as a provider's SSE chunks arrive from a socket. */
const socketModel = AiModel.make({
  name: "socket",
  stream: () =>
    Stream.mapEffect(Stream.fromIterable(deltas), (chunk) =>
      Effect.async<AiModel.CompletionChunk>((resume) => {
        setImmediate(() => resume(Effect.succeed(chunk)))
      }))
})
const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })

const main = async () => {
  const rows: Array<[string, number, string, string?]> = []
  const row = (name: string, value: number, unit: string, peer?: string) => {
    rows.push(peer === undefined ? [name, value, unit] : [name, value, unit, peer])
    console.error(`  ${name}: ${value.toFixed(3)} ${unit}`)
  }

  console.error("streamed answers: µs per chunk, 1,000-chunk answers...")
  const answers = 10
  const drain = (stream: () => Stream.Stream<unknown, unknown>) =>
    perUnit(answers * chunksPerAnswer, () =>
      Effect.runPromise(Effect.forEach(Array.from({ length: answers }), () => Stream.runDrain(stream()), { discard: true })))
  row("model stream read directly", await drain(() => instantModel.stream(request)), "µs/chunk")
  const withTimeouts = StreamingAnswer.make()
  row(
    "StreamingAnswer (first-chunk 30 s, idle 10 s)",
    await drain(() => withTimeouts([StreamingAnswer.fromModel(instantModel, request)])),
    "µs/chunk",
    "model stream read directly"
  )
  const noTimeouts = StreamingAnswer.make({ firstChunk: Infinity, betweenChunks: Infinity })
  row(
    "StreamingAnswer, timeouts off",
    await drain(() => noTimeouts([StreamingAnswer.fromModel(instantModel, request)])),
    "µs/chunk",
    "model stream read directly"
  )
  // the whole stack: AgentService.stream with its default policies (breaker, retry, permit,
  // learning token budget, first-chunk and idle timeouts), as an app streams a task's answer
  const agentOn = (model: AiModel.AiModel.Service) =>
    Effect.runPromise(Scope.extend(AgentService.make(), Effect.runSync(Scope.make())).pipe(Effect.provideService(AiModel.AiModel, model)))
  const streamTask = new AgentTask.AgentTask({ id: "s", prompt: "p", maxTokens: 8 })
  const instantAgent = await agentOn(instantModel)
  row(
    "AgentService.stream, default policies",
    await drain(() => instantAgent.stream(streamTask)),
    "µs/chunk",
    "model stream read directly"
  )
  const idleNaive = Timeout.betweenChunks({ duration: "10 seconds", model: "instant" })
  row(
    "model stream + Timeout.betweenChunks (Stream.timeoutFail)",
    await drain(() => idleNaive(instantModel.stream(request))),
    "µs/chunk",
    "model stream read directly"
  )
  row("socket-like model stream read directly", await drain(() => socketModel.stream(request)), "µs/chunk")
  row(
    "socket-like model through StreamingAnswer (first-chunk 30 s, idle 10 s)",
    await drain(() => withTimeouts([StreamingAnswer.fromModel(socketModel, request)])),
    "µs/chunk",
    "socket-like model stream read directly"
  )
  const socketAgent = await agentOn(socketModel)
  row(
    "socket-like model through AgentService.stream, default policies",
    await drain(() => socketAgent.stream(streamTask)),
    "µs/chunk",
    "socket-like model stream read directly"
  )
  row(
    "socket-like model + Timeout.betweenChunks (Stream.timeoutFail)",
    await drain(() => idleNaive(socketModel.stream(request))),
    "µs/chunk",
    "socket-like model stream read directly"
  )
  const oneChunk = AiModel.make({ name: "one", stream: () => Stream.make(deltas[chunksPerAnswer - 1]!) })
  const starts = 2000
  const perAnswer = (stream: () => Stream.Stream<unknown, unknown>) =>
    perUnit(starts, () =>
      Effect.runPromise(Effect.forEach(Array.from({ length: starts }), () => Stream.runDrain(stream()), { discard: true })))
  row("one-chunk answer read directly", await perAnswer(() => oneChunk.stream(request)), "µs/answer")
  row(
    "one-chunk answer through StreamingAnswer",
    await perAnswer(() => withTimeouts([StreamingAnswer.fromModel(oneChunk, request)])),
    "µs/answer",
    "one-chunk answer read directly"
  )

  console.error("events per second, every subscriber reading every event (no drops)...")
  const events = 10_000
  const event = new AgentEvent.TaskStarted({ taskId: "t" }, true)
  for (const subscribers of [1, 10, 100]) {
    const viaBus = Effect.scoped(Effect.gen(function*() {
      const bus = yield* EventBus.make({ strategy: "suspend" })
      const readers = yield* Effect.forEach(Array.from({ length: subscribers }), () =>
        Effect.flatMap(bus.subscribe(), (stream) => Effect.fork(Stream.runDrain(Stream.take(stream, events)))))
      for (let i = 0; i < events; i++) yield* bus.publish(event)
      yield* Fiber.joinAll(readers)
    }))
    const viaPubSub = Effect.scoped(Effect.gen(function*() {
      const pubsub = yield* PubSub.bounded<AgentEvent.AgentEvent>(1024)
      const readers = yield* Effect.forEach(Array.from({ length: subscribers }), () =>
        Effect.flatMap(PubSub.subscribe(pubsub), (queue) =>
          Effect.fork(Stream.runDrain(Stream.take(Stream.fromQueue(queue), events)))))
      for (let i = 0; i < events; i++) yield* PubSub.publish(pubsub, event)
      yield* Fiber.joinAll(readers)
    }))
    const us = await perUnit(events, () => Effect.runPromise(viaBus))
    row(`EventBus, ${subscribers} subscriber(s): events/s`, 1e6 / us, "events/s", `PubSub.bounded, ${subscribers}`)
    const pubsubUs = await perUnit(events, () => Effect.runPromise(viaPubSub))
    row(`PubSub.bounded, ${subscribers}`, 1e6 / pubsubUs, "events/s")
    const emitter = new EventEmitter()
    emitter.setMaxListeners(1000)
    let received = 0
    for (let s = 0; s < subscribers; s++) emitter.on("event", () => void received++)
    const emitterUs = await perUnit(events, async () => {
      for (let i = 0; i < events; i++) emitter.emit("event", event)
    })
    row(`EventEmitter (synchronous), ${subscribers}`, 1e6 / emitterUs, "events/s")
    if (received === 0) throw new Error("the emitter's listeners never ran")
  }

  console.error("publishing with no subscriber...")
  const n = 200_000
  const bus = await Effect.runPromise(Effect.flatMap(Scope.make(), (scope) => Scope.extend(EventBus.make(), scope)))
  const loop = (one: Effect.Effect<void>) =>
    Effect.gen(function*() {
      for (let i = 0; i < n; i++) yield* one
    })
  const baseline = await perUnit(n, () => Effect.runPromise(loop(Effect.void)))
  row("yield* Effect.void (the loop itself)", baseline * 1000, "ns/op")
  row("yield* bus.publish(event), nobody listens", (await perUnit(n, () => Effect.runPromise(loop(bus.publish(event))))) * 1000, "ns/op", "yield* Effect.void (the loop itself)")
  row(
    "bus.unsafePublish(event), nobody listens",
    (await perUnit(n, async () => {
      for (let i = 0; i < n; i++) bus.unsafePublish(event)
    })) * 1000,
    "ns/op"
  )
  row(
    "if (bus.wants(tag)) build and publish, nobody listens",
    (await perUnit(n, async () => {
      for (let i = 0; i < n; i++) {
        if (bus.wants("TaskStarted")) bus.unsafePublish(new AgentEvent.TaskStarted({ taskId: "t" }, true))
      }
    })) * 1000,
    "ns/op"
  )
  row(
    "build the event and publish it anyway, nobody listens",
    (await perUnit(n, async () => {
      for (let i = 0; i < n; i++) bus.unsafePublish(new AgentEvent.TaskStarted({ taskId: "t" }, true))
    })) * 1000,
    "ns/op"
  )
  row(
    "build the event with validation, nobody listens",
    (await perUnit(n, async () => {
      for (let i = 0; i < n; i++) bus.unsafePublish(new AgentEvent.TaskStarted({ taskId: "t" }))
    })) * 1000,
    "ns/op"
  )
  const self = fileURLToPath(import.meta.url)
  const allocation = JSON.parse(execFileSync(process.execPath, [
    "--expose-gc",
    "--max-semi-space-size=256",
    "--import",
    "tsx",
    self,
    "--allocation"
  ], { encoding: "utf8" })) as Record<string, number>
  row("bytes allocated per `if (wants) publish`, nobody listens", allocation.guarded!, "B/op")
  row("bytes allocated per unsafePublish(prebuilt event), nobody listens", allocation.unsafe!, "B/op")
  row("bytes allocated per publish of a new event, nobody listens", allocation.building!, "B/op")
  row("bytes allocated per bus.publish(event) effect built, nobody listens", allocation.effect!, "B/op")

  const byName = new Map(rows.map(([name, value]) => [name, value]))
  console.log("")
  console.log("| case | value | unit | vs |")
  console.log("|---|---:|---|---|")
  for (const [name, value, unit, peer] of rows) {
    const peerValue = peer === undefined ? undefined : byName.get(peer)
    const ratio = peerValue === undefined ? "" : `${(value / peerValue).toFixed(2)}× ${peer}`
    console.log(`| ${name} | ${value < 10 ? value.toFixed(3) : value.toFixed(0)} | ${unit} | ${ratio} |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
