/**
 * Client overhead per request: `OpenAiCompatible` (on `@effect/platform`'s HttpClient) against
 * the official `openai` package, on the same loopback server, whole and streamed answers, 1 and
 * 64 requests in flight. Run with `npx tsx bench/openai-compatible.ts` (two to three minutes).
 *
 * The server is a bare `node:http` one in a worker thread (so its work is not on the clients'
 * event loop), answering every request at once with the same recorded body: a whole
 * chat-completion JSON, or an SSE stream of 24 chunks (20 words, then the finish, usage and
 * `[DONE]`), one write per event. Both clients keep connections alive. Numbers are medians of
 * repeated rounds, in µs per request, with the ratio ours / openai's; on a shared 2-core machine
 * they move by ±10-20% from run to run.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Effect, Layer, ManagedRuntime, Stream } from "effect"
import OpenAI from "openai"
import { performance } from "node:perf_hooks"
import { Worker } from "node:worker_threads"
import { AiModel, OpenAiCompatible } from "../src/index.js"

const rounds = 5

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** µs per request: the median over `rounds` of `run` (after a warm-up run), divided by `requests`. */
const perRequest = async (requests: number, run: () => Promise<unknown>) => {
  await run()
  const samples: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    const start = performance.now()
    await run()
    samples.push(((performance.now() - start) * 1000) / requests)
  }
  return median(samples)
}

/** `total` calls of `one`, `inFlight` at a time. */
const promisePool = async (total: number, inFlight: number, one: () => Promise<unknown>) => {
  let next = 0
  const worker = async () => {
    while (next < total) {
      next++
      await one()
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
}

const serverCode = `
const http = require("node:http")
const { parentPort } = require("node:worker_threads")
const base = { id: "chatcmpl-bench", object: "chat.completion.chunk", created: 1741570301, model: "gpt-4o-mini-2024-07-18", system_fingerprint: "fp_06737a9306" }
const words = "Effect is a TypeScript library for typed composable programs and this answer has exactly twenty words in it".split(" ")
const whole = JSON.stringify({
  id: "chatcmpl-bench", object: "chat.completion", created: 1741569952, model: "gpt-4o-mini-2024-07-18",
  choices: [{ index: 0, message: { role: "assistant", content: words.join(" "), refusal: null }, logprobs: null, finish_reason: "stop" }],
  usage: { prompt_tokens: 31, completion_tokens: 20, total_tokens: 51 }, system_fingerprint: "fp_06737a9306"
})
const events = [
  { ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] },
  ...words.map((w, i) => ({ ...base, choices: [{ index: 0, delta: { content: (i === 0 ? "" : " ") + w }, logprobs: null, finish_reason: null }] })),
  { ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }] },
  { ...base, choices: [], usage: { prompt_tokens: 31, completion_tokens: 20, total_tokens: 51 } }
].map((e) => "data: " + JSON.stringify(e) + "\\n\\n").concat(["data: [DONE]\\n\\n"])
const server = http.createServer({ keepAliveTimeout: 60000 }, (req, res) => {
  const parts = []
  req.on("data", (d) => parts.push(d))
  req.on("end", () => {
    const stream = Buffer.concat(parts).includes('"stream":true')
    if (!stream) {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(whole), "x-ratelimit-remaining-requests": "9999", "x-ratelimit-reset-requests": "6ms" })
      res.end(whole)
      return
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    for (const e of events) res.write(e)
    res.end()
  })
})
server.keepAliveTimeout = 60000
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port))
`

const startServer = () =>
  new Promise<{ port: number; stop: () => Promise<number> }>((resolve, reject) => {
    const worker = new Worker(serverCode, { eval: true })
    worker.once("message", (port: number) => resolve({ port, stop: () => worker.terminate() }))
    worker.once("error", reject)
  })

const main = async () => {
  const server = await startServer()
  const baseUrl = `http://127.0.0.1:${server.port}/v1`
  const request = new AiModel.CompletionRequest({ prompt: "Summarise: Effect is a TypeScript library.", maxTokens: 64 })
  const openai = new OpenAI({ apiKey: "sk-bench", baseURL: baseUrl, maxRetries: 0 })
  const messages = [{ role: "user" as const, content: request.prompt }]

  const clients = [
    ["undici (NodeHttpClient.layerUndici)", NodeHttpClient.layerUndici],
    ["node:http keep-alive (NodeHttpClient.makeAgentLayer)", NodeHttpClient.layerWithoutAgent.pipe(Layer.provide(NodeHttpClient.makeAgentLayer({ keepAlive: true })))]
  ] as const

  const rows: Array<{ readonly name: string; readonly us: number; readonly peer?: number }> = []
  for (const [inFlight, wholeCount, streamCount] of [[1, 1000, 500], [64, 3000, 1500]] as const) {
    const theirsWhole = await perRequest(wholeCount, () =>
      promisePool(wholeCount, inFlight, async () => {
        const answer = await openai.chat.completions.create({ model: "gpt-4o-mini", messages, max_tokens: 64 })
        if (answer.choices[0]?.message.content === undefined) throw new Error("no answer")
      }))
    const theirsStream = await perRequest(streamCount, () =>
      promisePool(streamCount, inFlight, async () => {
        const stream = await openai.chat.completions.create({
          model: "gpt-4o-mini",
          messages,
          max_tokens: 64,
          stream: true,
          stream_options: { include_usage: true }
        })
        let text = ""
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ""
        if (text.length === 0) throw new Error("no text")
      }))
    rows.push({ name: `openai: whole, ${inFlight} in flight`, us: theirsWhole })
    rows.push({ name: `openai: streamed, ${inFlight} in flight`, us: theirsStream })
    for (const [clientName, clientLayer] of clients) {
      const runtime = ManagedRuntime.make(OpenAiCompatible.layer({ baseUrl, model: "gpt-4o-mini" }).pipe(Layer.provide(clientLayer)))
      const model = await runtime.runPromise(AiModel.AiModel)
      const whole = await perRequest(wholeCount, () =>
        runtime.runPromise(Effect.forEach(Array.from({ length: wholeCount }), () => model.generate(request), { concurrency: inFlight, discard: true })))
      const streamed = await perRequest(streamCount, () =>
        runtime.runPromise(
          Effect.forEach(Array.from({ length: streamCount }), () => Stream.runDrain(model.stream(request)), { concurrency: inFlight, discard: true })
        ))
      rows.push({ name: `ours, ${clientName}: whole, ${inFlight} in flight`, us: whole, peer: theirsWhole })
      rows.push({ name: `ours, ${clientName}: streamed, ${inFlight} in flight`, us: streamed, peer: theirsStream })
      await runtime.dispose()
      console.error(`  ${inFlight} in flight, ${clientName}: whole ${whole.toFixed(0)} µs (openai ${theirsWhole.toFixed(0)}), streamed ${streamed.toFixed(0)} µs (openai ${theirsStream.toFixed(0)})`)
    }
  }
  await server.stop()

  console.log("")
  console.log("| case | µs per request | vs openai |")
  console.log("|---|---:|---|")
  for (const { name, peer, us } of rows) {
    console.log(`| ${name} | ${us.toFixed(0)} | ${peer === undefined ? "" : `${(us / peer).toFixed(2)}×`} |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
