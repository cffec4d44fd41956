/**
 * The HTTP model under the whole resilience stack: `AgentService.layer(...)` over
 * `OpenAiCompatible.layer(...)` over a real HTTP client, against the loopback FakeProvider.
 * Retries, breaker, fallback and the retry budget must behave on real HTTP faults as they do
 * on the simulator; and the API key must leak nowhere.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Redacted,
  Schema,
  Stream,
  TestClock,
  Tracer
} from "effect"
import type { Context } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask, TaskRecord } from "../../src/agent/AgentTask.js"
import { AgentEvent } from "../../src/events/AgentEvent.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as CircuitBreaker from "../../src/policy/CircuitBreaker.js"
import * as Fake from "../support/FakeProvider.js"
import { awaitTimer } from "../support/timers.js"

const key = "sk-wiz-LEAKCHECK-7f3e2d1c0b9a88776655"
const task = (id: string) => new AgentTask({ id, prompt: `Summarise: task ${id} is about Effect. Effect is typed.` })

const agentOver = (fake: Fake.FakeProvider, options: AgentService.Options, modelOptions: Partial<OpenAiCompatible.Options> = {}) =>
  AgentService.layer(options).pipe(
    Layer.provide(OpenAiCompatible.layer({ baseUrl: fake.url, model: "primary", apiKey: Redacted.make(key), ...modelOptions }))
  )

/** Every event the agent publishes from now on, appended to the returned array as it comes. */
const record = (agent: AgentService.AgentService.Service) =>
  Effect.gen(function*() {
    const events: Array<AgentEvent> = []
    const subscription = yield* agent.subscribe
    yield* Effect.forkScoped(Stream.runForEach(subscription, (event) => Effect.sync(() => void events.push(event))))
    return events
  })

/** Steps virtual time until `fiber` is done: for tests that wait on backoffs whose count they do not fix. */
const runOut = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, step: Duration.DurationInput = "10 millis", maxSteps = 2_000) =>
  Effect.gen(function*() {
    for (let i = 0; i < maxSteps; i++) {
      const done = yield* Fiber.poll(fiber)
      if (Option.isSome(done)) return yield* done.value
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      yield* TestClock.adjust(step)
    }
    return yield* Effect.dieMessage("the fiber did not finish")
  })

layer(NodeHttpClient.layerUndici)("OpenAiCompatible through AgentService", (it) => {
  it.scoped("seed bug 4: a 429's Retry-After is waited out to the millisecond, then the retry succeeds", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      yield* fake.script(Fake.error(429, { message: "Rate limit reached for requests", code: "rate_limit_exceeded" }, { "retry-after": "2" }))
      const result = yield* Effect.gen(function*() {
        const agent = yield* AgentService.AgentService
        const fiber = yield* Effect.fork(agent.process(task("t1")))
        yield* fake.received(1)
        yield* awaitTimer("2 seconds")
        yield* TestClock.adjust("1999 millis")
        expect((yield* fake.requests).length).toBe(1)
        yield* TestClock.adjust("1 millis")
        return yield* Fiber.join(fiber)
      }).pipe(Effect.provide(agentOver(fake, { retry: { maxAttempts: 3, jitter: "none", base: "100 millis" }, breaker: false })))
      expect(result).toMatchObject({ _tag: "TaskSucceeded", id: "t1", attempts: 2, model: "primary", degraded: false })
      expect((yield* fake.requests).length).toBe(2)
    }))

  it.scoped("pitfall: a 400 'prompt too long' is neither retried nor handed to the fallback model", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const spare = yield* Fake.make()
      const fallbackModel = yield* OpenAiCompatible.make({ baseUrl: spare.url, model: "spare" })
      yield* fake.script(Fake.error(400, { message: "This model's maximum context length is 8192 tokens.", code: "context_length_exceeded" }))
      const result = yield* Effect.flip(Effect.flatMap(AgentService.AgentService, (agent) => agent.process(task("long")))).pipe(
        Effect.provide(agentOver(fake, { retry: { maxAttempts: 4 }, fallback: { models: [fallbackModel] } }))
      )
      expect(result.attempts).toBe(1)
      expect(result.error._tag).toBe("InvalidRequest")
      expect((yield* fake.requests).length).toBe(1)
      expect(yield* spare.requests).toStrictEqual([])
    }))

  it.scoped("a 401 is not retried; the fallback model answers and the record says degraded", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const spare = yield* Fake.make()
      const fallbackModel = yield* OpenAiCompatible.make({ baseUrl: spare.url, model: "spare" })
      yield* fake.script(Fake.error(401, { message: "Incorrect API key provided", code: "invalid_api_key" }))
      const result = yield* Effect.flatMap(AgentService.AgentService, (agent) => agent.process(task("t"))).pipe(
        Effect.provide(agentOver(fake, { retry: { maxAttempts: 4 }, fallback: { models: [fallbackModel] } }))
      )
      expect(result).toMatchObject({ _tag: "TaskSucceeded", model: "spare", degraded: true, attempts: 2 })
      expect((yield* fake.requests).length).toBe(1)
      expect((yield* spare.requests).length).toBe(1)
    }))

  it.scoped("seed bug 5: consecutive 500s open the breaker; a task then waits on it without a request, and its call after the open time is the probe that closes it", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const server500 = Fake.error(500, { message: "The server had an error", type: "server_error" })
      yield* fake.script(server500, server500, server500)
      const { events, results } = yield* Effect.gen(function*() {
        const agent = yield* AgentService.AgentService
        const events = yield* record(agent)
        const results = []
        for (const id of ["a", "b", "c"]) results.push(yield* Effect.either(agent.process(task(id))))
        const waiting = yield* Effect.fork(Effect.either(agent.process(task("d"))))
        // d waits on the open circuit: its wake-up is the open time's end, and no request is made
        yield* awaitTimer("1 minute")
        expect((yield* fake.requests).length).toBe(3)
        yield* TestClock.adjust("1 minute")
        results.push(yield* Fiber.join(waiting))
        results.push(yield* Effect.either(agent.process(task("e"))))
        return { events, results }
      }).pipe(
        Effect.provide(agentOver(fake, {
          retry: false,
          breaker: { tripPolicy: CircuitBreaker.consecutive(3), openDuration: "1 minute" }
        }))
      )
      expect(results.map((r) => (r._tag === "Left" ? r.left.error._tag : "ok"))).toStrictEqual([
        "ProviderError",
        "ProviderError",
        "ProviderError",
        "ok",
        "ok"
      ])
      expect((yield* fake.requests).length).toBe(5)
      expect(events.flatMap((e) => (e._tag === "BreakerTransition" ? [`${e.from}->${e.to}`] : []))).toStrictEqual([
        "Closed->Open",
        "Open->HalfOpen",
        "HalfOpen->Closed"
      ])
    }))

  it.scoped("the retry budget caps a 503 storm: 20 tasks make at most 20 + 10% requests, and give up with reason budget", () =>
    Effect.gen(function*() {
      const overloaded: AiModel.AiModel.Service = AiModel.make({
        name: "down",
        generate: () => Effect.fail(new AiModel.Overloaded({ model: "down" }))
      })
      const fake = yield* Fake.make({ model: overloaded })
      const { events, results } = yield* Effect.gen(function*() {
        const agent = yield* AgentService.AgentService
        const events = yield* record(agent)
        const fiber = yield* Effect.fork(Stream.runCollect(agent.processAll(Array.from({ length: 20 }, (_, i) => task(`s${i}`)))))
        const results = Chunk.toReadonlyArray(yield* runOut(fiber))
        return { events, results }
      }).pipe(
        Effect.provide(agentOver(fake, {
          concurrency: 20,
          retry: { maxAttempts: 5, jitter: "none", base: "10 millis" },
          retryBudget: { ratio: 0.1, minPerSecond: 0, window: "10 seconds" },
          breaker: false
        }))
      )
      expect(results.every((r) => r._tag === "TaskFailed" && r.error._tag === "Overloaded")).toBe(true)
      const requests = (yield* fake.requests).length
      expect(requests).toBeGreaterThanOrEqual(20)
      expect(requests).toBeLessThanOrEqual(22) // without the budget: 100
      expect(events.filter((e) => e._tag === "RetryGivenUp" && e.reason === "budget").length).toBeGreaterThanOrEqual(18)
    }))
})

// -----------------------------------------------------------------------------
// the API key leaks nowhere
// -----------------------------------------------------------------------------

class RecordingSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly traceId = "trace"
  readonly sampled = true
  readonly attributes = new Map<string, unknown>()
  readonly links: Array<Tracer.SpanLink>
  readonly events: Array<{ readonly name: string; readonly attributes: Record<string, unknown> | undefined }> = []
  status: Tracer.SpanStatus
  constructor(
    readonly name: string,
    readonly spanId: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    links: ReadonlyArray<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind
  ) {
    this.links = [...links]
    this.status = { _tag: "Started", startTime }
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }
  event(name: string, _startTime: bigint, attributes?: Record<string, unknown>): void {
    this.events.push({ name, attributes })
  }
  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

describe("the API key", () => {
  // The server echoes the key in every body it can (error JSON, HTML, plain text, event-stream
  // data). Not in a response header (an `x-echo`, a redirect's `location`): @effect/platform's
  // client records response headers on its span as the server sent them, redacting by header
  // name only, so a server that echoes the key in a header puts it in that span.
  it.scoped("appears in no error, log line, event, span attribute or output record, even when the server echoes it in every body", () =>
    Effect.gen(function*() {
      const spans: Array<RecordingSpan> = []
      const tracer = Tracer.make({
        span: (name, parent, context, links, startTime, kind) => {
          const span = new RecordingSpan(name, `span-${spans.length}`, parent, context, links, startTime, kind)
          spans.push(span)
          return span
        },
        context: (f) => f()
      })
      const logs: Array<string> = []
      const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
        logs.push(JSON.stringify({ level: logLevel.label, message, annotations: [...annotations], cause: Cause.pretty(cause) }))
      })

      const fake = yield* Fake.make()
      const spare = yield* Fake.make()
      const echo = `Incorrect API key provided: ${key}. Bearer ${key}`
      const leaking: ReadonlyArray<Fake.Reply> = [
        Fake.error(401, { message: echo, code: "invalid_api_key" }),
        Fake.error(403, { message: echo }),
        Fake.error(429, { message: echo, code: "rate_limit_exceeded" }, { "retry-after": "1" }),
        Fake.error(500, { message: echo, type: "server_error" }),
        Fake.error(503, { message: echo }),
        Fake.error(400, { message: echo }),
        Fake.error(400, { message: `context length exceeded; ${echo}`, code: "context_length_exceeded" }),
        Fake.error(500, { message: echo }, { "x-should-retry": "false" }),
        Fake.raw(200, `not json ${key}`, { headers: { "content-type": "application/json" } }),
        Fake.raw(502, `<html><head><title>${key}</title></head></html>`, { headers: { "content-type": "text/html" } }),
        Fake.raw(200, `plain ${key}`, { headers: { "content-type": "text/plain" } }),
        Fake.redirect(`http://localhost:${spare.port}/v1/chat/completions`)
      ]
      const streaming: ReadonlyArray<Fake.Reply> = [
        Fake.answer({ text: "some text here", errorAfter: { chunks: 1, error: { message: echo, type: "server_error" } } }),
        Fake.answer({ text: "some text", errorAfter: { chunks: 1, error: { message: echo, type: "overloaded_error" }, asEvent: true } }),
        Fake.raw(200, `data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: ${key} is not json\n\n`, { headers: { "content-type": "text/event-stream" } })
      ]

      const model = yield* OpenAiCompatible.make({
        baseUrl: fake.url,
        model: "primary",
        apiKey: Redacted.make(key),
        headers: { "api-key": Redacted.make(key) }
      })
      const errors: Array<unknown> = []
      const scanned = yield* Effect.gen(function*() {
        // the model alone: every fault, whole and streamed
        for (const reply of leaking) {
          yield* fake.script(reply)
          errors.push(yield* Effect.flip(model.generate(new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 }))))
        }
        for (const reply of streaming) {
          yield* fake.script(reply)
          errors.push(yield* Effect.flip(Stream.runDrain(model.stream(new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })))))
        }
        // and through the whole agent, with retries and a fallback that leaks too
        yield* fake.script(...leaking, ...leaking)
        yield* spare.script(...leaking)
        const fallbackModel = yield* OpenAiCompatible.make({ baseUrl: spare.url, model: "spare", apiKey: Redacted.make(key) })
        return yield* Effect.gen(function*() {
          const agent = yield* AgentService.AgentService
          const events = yield* record(agent)
          const tasks = Array.from({ length: 12 }, (_, i) => task(`k${i}`))
          const fiber = yield* Effect.fork(Stream.runCollect(agent.processAll(tasks)))
          const results = Chunk.toReadonlyArray(yield* runOut(fiber, "1 second"))
          return { events, results }
        }).pipe(
          Effect.provide(AgentService.layer({
            concurrency: 4,
            retry: { maxAttempts: 2, jitter: "none", base: "1 second" },
            fallback: { models: [fallbackModel] }
          }).pipe(Layer.provide(Layer.succeed(AiModel.AiModel, model))))
        )
      }).pipe(
        Effect.withTracer(tracer),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        Logger.withMinimumLogLevel(LogLevel.All)
      )

      expect(scanned.results.length).toBe(12)
      expect(spans.some((s) => s.name.startsWith("http.client"))).toBe(true)
      expect(errors.length).toBe(leaking.length + streaming.length)
      const encodeError = Schema.encodeSync(AiModel.ModelError)
      const everything = JSON.stringify({
        errors: errors.map((e) => ({ json: encodeError(e as AiModel.ModelError), message: (e as Error).message, pretty: String(e) })),
        events: scanned.events.map((e) => Schema.encodeSync(AgentEvent)(e)),
        records: scanned.results.map((r) => Schema.encodeSync(TaskRecord)(r)),
        logs,
        spans: spans.map((s) => ({
          name: s.name,
          attributes: [...s.attributes].map(([k, v]) => [k, String(v)]),
          events: s.events,
          exit: s.status._tag === "Ended" ? (Exit.isFailure(s.status.exit) ? Cause.pretty(s.status.exit.cause) : "ok") : "open"
        }))
      })
      // the scan sees the material it looks through (it would pass vacuously on an empty dump)
      expect(everything).toContain("authentication failed")
      expect(everything).toContain("http.request.header.authorization")
      expect(everything).toContain("[redacted]")
      expect(everything).not.toContain(key)
      expect(everything).not.toContain("LEAKCHECK")
      expect(everything).not.toContain("7f3e2d1c0b9a88776655")
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)))
})
