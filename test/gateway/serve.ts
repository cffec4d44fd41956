/**
 * A gateway on loopback for the gateway tests: a FakeProvider upstream (or a model of the
 * test's own), `OpenAiCompatible` on it with a fresh upstream key, `AgentService` with the
 * test's options, and `Gateway` served by `NodeHttpServer` on 127.0.0.1, port 0. Everything
 * stops with the test's scope.
 */
import { FetchHttpClient } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { createServer } from "node:http"
import OpenAI from "openai"
import * as AgentService from "../../src/agent/AgentService.js"
import * as Gateway from "../../src/gateway/Gateway.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as Fake from "../support/FakeProvider.js"
import { freshKey } from "../support/Secrets.js"

export interface Served {
  readonly fake: Fake.FakeProvider
  /** The gateway's base URL, `http://127.0.0.1:PORT/v1`. */
  readonly url: string
  readonly origin: string
  /** The upstream's key, which must reach no client. */
  readonly upstreamKey: string
  /** An `openai` client on the gateway (no retries of its own). */
  readonly client: (apiKey?: string) => OpenAI
  /** An `openai` client on the upstream directly. */
  readonly direct: OpenAI
}

export const serve = (options: {
  readonly gateway?: Gateway.Options
  readonly agent?: AgentService.Options
  /** A model of the test's own instead of OpenAiCompatible on the fake upstream. */
  readonly model?: AiModel.AiModel.Service
  readonly fake?: Fake.Options
  /** The least level logged (default Warning: no request lines). */
  readonly logLevel?: LogLevel.LogLevel
} = {}) =>
  Effect.gen(function*() {
    const fake = yield* Fake.make(options.fake)
    const upstreamKey = freshKey()
    const model = options.model === undefined
      ? OpenAiCompatible.layer({ baseUrl: fake.url, model: "fake", apiKey: Redacted.make(upstreamKey) }).pipe(
        Layer.provide(FetchHttpClient.layer),
        Layer.orDie
      )
      : Layer.succeed(AiModel.AiModel, options.model)
    const server = createServer()
    yield* Layer.build(
      Gateway.layer({ secrets: [Redacted.make(upstreamKey)], ...options.gateway }).pipe(
        Layer.provide(NodeHttpServer.layer(() => server, { port: 0, host: "127.0.0.1" })),
        Layer.provide(AgentService.layer({ retry: { maxAttempts: 3, base: "5 millis" }, ...options.agent }).pipe(Layer.provide(model))),
        Layer.provide(Logger.minimumLogLevel(options.logLevel ?? LogLevel.Warning))
      )
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => server.closeAllConnections()))
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    const origin = `http://127.0.0.1:${port}`
    const url = `${origin}/v1`
    return {
      fake,
      url,
      origin,
      upstreamKey,
      client: (apiKey = "no-key-needed") => new OpenAI({ apiKey, baseURL: url, maxRetries: 0, timeout: 10_000 }),
      direct: new OpenAI({ apiKey: upstreamKey, baseURL: fake.url, maxRetries: 0, timeout: 10_000 })
    } satisfies Served
  })
