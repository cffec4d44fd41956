/**
 * `Gateway`'s limits over real HTTP on loopback: honest back-pressure (429 with a retry-after
 * computed from the real budget, the client's own x-ratelimit-* headers), client keys, the
 * upstream key kept from every client, and the size, length and CORS limits.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted } from "effect"
import * as http from "node:http"
import * as AiModel from "../../src/model/AiModel.js"
import * as Fake from "../support/FakeProvider.js"
import { expectNoKey } from "../support/Secrets.js"
import { serve } from "./serve.js"

const messages = [{ role: "user", content: "Summarise: Effect is a TypeScript library." }]

/** A raw POST to the gateway, its status, headers and body text. */
const post = (origin: string, body: unknown, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    fetch(`${origin}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body)
    }).then(async (response) => ({ status: response.status, headers: response.headers, text: await response.text() }))
  )

const keyA = "client-key-aaaaaaaaaaaaaaaa"
const keyB = "client-key-bbbbbbbbbbbbbbbb"

describe("Gateway limits", () => {
  it.scopedLive("the upstream budget full: 429 at once, with a retry-after computed from the budget's refill", () =>
    Effect.gen(function*() {
      // one request of burst, refilled at 6 a minute: the second would wait 10 s
      const { origin } = yield* serve({
        agent: { tokenBudget: { limits: { requests: { limit: 6, per: "1 minute", burst: 1 } }, probe: false } },
        gateway: { maxBudgetWait: "1 second" }
      })
      expect((yield* post(origin, { model: "fake", messages })).status).toBe(200)
      const refused = yield* post(origin, { model: "fake", messages })
      expect(refused.status).toBe(429)
      const retryAfter = Number(refused.headers.get("retry-after"))
      expect(retryAfter).toBeGreaterThanOrEqual(9)
      expect(retryAfter).toBeLessThanOrEqual(10)
      expect(JSON.parse(refused.text)).toMatchObject({ error: { type: "rate_limit_exceeded", code: "gateway_busy" } })
    }))

  it.scopedLive("issue 21: the requests already waiting on the budget count: one that would fit alone within maxBudgetWait, but not behind them, is refused at once", () =>
    Effect.gen(function*() {
      // one request of burst, refilled at 6 a minute: the second waits 10 s, within the 15 s
      // allowed; the third would wait 10 s alone, but 20 s behind the second
      const { origin } = yield* serve({
        agent: { tokenBudget: { limits: { requests: { limit: 6, per: "1 minute", burst: 1 } }, probe: false } },
        gateway: { maxBudgetWait: "15 seconds" }
      })
      expect((yield* post(origin, { model: "fake", messages })).status).toBe(200)
      const second = yield* Effect.fork(post(origin, { model: "fake", messages }))
      // wait until the second waits on the budget
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
      const third = yield* post(origin, { model: "fake", messages })
      expect(third.status).toBe(429)
      const retryAfter = Number(third.headers.get("retry-after"))
      expect(retryAfter).toBeGreaterThanOrEqual(19)
      expect(retryAfter).toBeLessThanOrEqual(20)
      yield* Fiber.interrupt(second)
    }))

  it.scopedLive("the limiter's queue full: 429 for the request past maxQueued, while the ones admitted are answered", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const model = AiModel.make({
        name: "m",
        generate: (request) =>
          Effect.as(
            Deferred.await(gate),
            new AiModel.Completion({
              text: `answer to ${request.prompt}`,
              finishReason: "stop",
              usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 3 }),
              model: "m"
            })
          )
      })
      const { origin } = yield* serve({ model, agent: { concurrency: 1 }, gateway: { maxQueued: 1 } })
      const first = yield* Effect.fork(post(origin, { model: "m", messages }))
      const second = yield* Effect.fork(post(origin, { model: "m", messages: [{ role: "user", content: "other" }] }))
      // wait until the second waits for the permit
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
      const third = yield* post(origin, { model: "m", messages })
      expect(third.status).toBe(429)
      expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
      yield* Deferred.succeed(gate, undefined)
      expect((yield* Fiber.join(first)).status).toBe(200)
      expect((yield* Fiber.join(second)).status).toBe(200)
    }))

  it.scopedLive("client keys: none or a wrong one is a 401; each key has its own requests per minute, with x-ratelimit-* headers and a real retry-after", () =>
    Effect.gen(function*() {
      const { origin } = yield* serve({
        gateway: {
          clientKeys: [
            { key: Redacted.make(keyA), name: "team-a", requestsPerMinute: 2 },
            { key: Redacted.make(keyB), name: "team-b" }
          ]
        }
      })
      expect((yield* post(origin, { model: "fake", messages })).status).toBe(401)
      expect((yield* post(origin, { model: "fake", messages }, { authorization: "Bearer client-key-wrong-wrong-wrong" })).status).toBe(401)
      const ok = yield* post(origin, { model: "fake", messages }, { authorization: `Bearer ${keyA}` })
      expect(ok.status).toBe(200)
      expect(ok.headers.get("x-ratelimit-limit-requests")).toBe("2")
      expect(ok.headers.get("x-ratelimit-remaining-requests")).toBe("1")
      expect(ok.headers.get("x-ratelimit-reset-requests")).toMatch(/^\d+(ms|s)$/)
      expect((yield* post(origin, { model: "fake", messages }, { authorization: `Bearer ${keyA}` })).status).toBe(200)
      const limited = yield* post(origin, { model: "fake", messages }, { authorization: `Bearer ${keyA}` })
      expect(limited.status).toBe(429)
      // 2 a minute: one more request fits again after 30 s
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(29)
      expect(Number(limited.headers.get("retry-after"))).toBeLessThanOrEqual(30)
      expect(limited.headers.get("x-ratelimit-remaining-requests")).toBe("0")
      expect(JSON.parse(limited.text)).toMatchObject({ error: { code: "client_requests_per_minute" } })
      // another client's budget is its own
      expect((yield* post(origin, { model: "fake", messages }, { authorization: `Bearer ${keyB}` })).status).toBe(200)
    }))

  it.scopedLive("the upstream key never reaches a client: not in error bodies, headers, stream errors or metrics", () =>
    Effect.gen(function*() {
      const { fake, origin, upstreamKey } = yield* serve({ agent: { retry: false } })
      const echoed = `Incorrect API key provided: ${upstreamKey}`
      yield* fake.script(
        Fake.error(401, { message: echoed, type: "invalid_request_error", code: "invalid_api_key" }, { "x-echo": upstreamKey }),
        Fake.error(500, { message: `internal: key=${upstreamKey}` }),
        Fake.answer({ text: "a b c", pieces: ["a ", "b ", "c"], errorAfter: { chunks: 1, error: { message: `boom ${upstreamKey}` } } })
      )
      const refused = yield* post(origin, { model: "fake", messages })
      expect(refused.status).toBe(502)
      expect(JSON.parse(refused.text)).toMatchObject({ error: { code: "upstream_authentication_failed" } })
      const failed = yield* post(origin, { model: "fake", messages })
      expect(failed.status).toBe(502)
      const broken = yield* post(origin, { model: "fake", messages, stream: true })
      expect(broken.text).toContain(`"error"`)
      const metrics = yield* Effect.promise(() => fetch(`${origin}/metrics`).then((r) => r.text()))
      for (const [where, text] of [
        ["401 body", refused.text],
        ["401 headers", JSON.stringify([...refused.headers])],
        ["500 body", failed.text],
        ["stream", broken.text],
        ["metrics", metrics]
      ] as const) expectNoKey(text, upstreamKey, where)
      // and the upstream did get it
      expect((yield* fake.requests)[0]!.headers["authorization"]).toBe(`Bearer ${upstreamKey}`)
    }))

  it.scopedLive("a body sent without a length is cut off once past maxBodyBytes, before any model call, and the next request is answered", () =>
    Effect.gen(function*() {
      const { fake, origin } = yield* serve({ gateway: { maxBodyBytes: 2_000 } })
      // chunked: no content-length to refuse it by, so the read itself must stop it
      const outcome = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const request = http.request(`${origin}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" } }, (response) => {
            response.resume()
            response.on("end", () => resolve(String(response.statusCode)))
          })
          request.on("error", () => resolve("reset"))
          request.write(`{"model":"fake","messages":[{"role":"user","content":"`)
          for (let i = 0; i < 16; i++) request.write("x".repeat(1_000))
          request.end(`"}]}`)
        })
      )
      expect(["413", "reset"]).toContain(outcome)
      expect(yield* fake.requests).toHaveLength(0)
      expect((yield* post(origin, { model: "fake", messages })).status).toBe(200)
    }))

  it.scopedLive("limits: a body over maxBodyBytes is a 413, max_tokens is capped, tools are refused, a stream past maxStreamChars ends with an SSE error", () =>
    Effect.gen(function*() {
      const { fake, origin } = yield* serve({ gateway: { maxBodyBytes: 2_000, maxTokensCap: 50, maxStreamChars: 10 } })
      const big = yield* post(origin, { model: "fake", messages: [{ role: "user", content: "x".repeat(5_000) }] })
      expect(big.status).toBe(413)
      expect((yield* post(origin, { model: "fake", messages, max_tokens: 100_000 })).status).toBe(200)
      expect(((yield* fake.requests).at(-1)!.body as Record<string, unknown>)["max_tokens"]).toBe(50)
      const tools = yield* post(origin, { model: "fake", messages, tools: [{ type: "function", function: { name: "f" } }] })
      expect(tools.status).toBe(400)
      expect(tools.text).toContain("tools are not supported")
      const notJson = yield* post(origin, "{")
      expect(notJson.status).toBe(400)
      yield* fake.script(Fake.answer({ text: "aaaaaaaa bbbbbbbb cccccccc", pieces: ["aaaaaaaa ", "bbbbbbbb ", "cccccccc"], between: "10 millis" }))
      const long = yield* post(origin, { model: "fake", messages, stream: true })
      expect(long.text).toContain(`"code":"stream_too_long"`)
      expect(long.text).not.toContain("cccccccc")
      expect(long.text).not.toContain("[DONE]")
    }))

  it.scopedLive("no CORS unless asked: no access-control headers by default, the listed origin only when given", () =>
    Effect.gen(function*() {
      const plain = yield* serve()
      const preflight = (origin: string) =>
        Effect.promise(() =>
          fetch(`${origin}/v1/chat/completions`, {
            method: "OPTIONS",
            headers: { origin: "https://app.example", "access-control-request-method": "POST" }
          }).then((r) => r.headers.get("access-control-allow-origin"))
        )
      expect(yield* preflight(plain.origin)).toBeNull()
      const withCors = yield* serve({ gateway: { cors: ["https://app.example"] } })
      expect(yield* preflight(withCors.origin)).toBe("https://app.example")
    }))

  it.scopedLive("a later, longer retry-after from the provider wins over an earlier, shorter one (LiteLLM #40130), and no call is made meanwhile", () =>
    Effect.gen(function*() {
      const { fake, origin } = yield* serve({ agent: { retry: false } })
      const report = Fake.openAiHeaders({ limit: 100, remaining: 0, resetMillis: 1_000 }, { limit: 100_000, remaining: 50_000, resetMillis: 1_000 })
      yield* fake.script(
        Fake.error(429, { message: "slow down", type: "requests" }, { ...report, "retry-after": "1" }),
        Fake.error(429, { message: "cooling down", type: "requests" }, { ...report, "retry-after": "60" })
      )
      const first = yield* post(origin, { model: "fake", messages })
      expect(first.status).toBe(429)
      expect(first.headers.get("retry-after")).toBe("1")
      // the budget holds the second for the first one's second, then the provider says 60 s
      const second = yield* post(origin, { model: "fake", messages })
      expect(second.status).toBe(429)
      expect(second.headers.get("retry-after")).toBe("60")
      // now the gateway itself answers with the longer hold, without calling the provider
      const third = yield* post(origin, { model: "fake", messages })
      expect(third.status).toBe(429)
      expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(58)
      expect(JSON.parse(third.text)).toMatchObject({ error: { code: "gateway_busy" } })
      expect((yield* fake.requests).length).toBe(2)
    }))
})
