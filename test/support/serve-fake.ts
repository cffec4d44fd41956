/**
 * `npm run serve:fake`: the test suite's fake OpenAI-compatible provider, started for a person
 * to try the whole path offline. It answers `POST /v1/chat/completions` (whole or streamed) with
 * the embedded model's answers, and with its faults as a real provider sends them: a 429 with
 * `retry-after`, a 503, a stall.
 *
 *   npm run serve:fake -- [--port 8787] [--failure-rate 0.1] [--seed 1] [--time-to-first-token "100 millis"]
 *   npm run wiz -- run examples/tasks.jsonl --model openai-compatible --base-url http://127.0.0.1:8787/v1 --model-name fake
 *
 * Ctrl-C stops it.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Option } from "effect"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as FakeProvider from "./FakeProvider.js"

const flag = (name: string): string | undefined => {
  const at = process.argv.indexOf(`--${name}`)
  return at === -1 ? undefined : process.argv[at + 1]
}

const number = (name: string, fallback: number): number => {
  const text = flag(name)
  if (text === undefined) return fallback
  const n = Number(text)
  if (!Number.isFinite(n)) throw new Error(`--${name}: not a number: ${text}`)
  return n
}

const duration = (name: string, fallback: Duration.Duration): Duration.Duration => {
  const text = flag(name)
  return text === undefined ? fallback : Option.getOrThrowWith(Duration.decodeUnknown(text), () => new Error(`--${name}: not a duration: ${text}`))
}

const program = Effect.gen(function*() {
  const model = yield* EmbeddedModel.make({
    seed: number("seed", 1),
    failureRate: number("failure-rate", 0),
    timeToFirstToken: duration("time-to-first-token", Duration.millis(100)),
    perToken: duration("per-token", Duration.millis(2))
  })
  const fake = yield* FakeProvider.make({ model, port: number("port", 8787), log: process.argv.includes("--log") })
  yield* Effect.sync(() =>
    process.stderr.write(
      `fake OpenAI-compatible provider on ${fake.url} (POST ${fake.url}/chat/completions); Ctrl-C stops it\n` +
        `try: npm run wiz -- run examples/tasks.jsonl --model openai-compatible --base-url ${fake.url} --model-name fake\n`
    )
  )
  return yield* Effect.never
}).pipe(Effect.scoped)

NodeRuntime.runMain(program)
