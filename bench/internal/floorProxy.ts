/**
 * The least a gateway does, as a child process of `bench/gateway.ts`, so that the latency
 * `wiz serve` adds can be set beside what its HTTP stack adds with nothing on top:
 *
 *     node --import tsx bench/internal/floorProxy.ts platform|node UPSTREAM_BASE_URL
 *
 * It forwards `POST /v1/chat/completions` to the upstream and answers with what came back,
 * read and written again: a whole answer's JSON parsed and serialised, a stream's every event
 * parsed and serialised (a gateway that can continue a stream or fall back must read each
 * event). No policy, no log line, no metric.
 *
 * - `platform`: on `@effect/platform` as `wiz serve` is (`NodeHttpServer`, `HttpRouter`,
 *   `NodeHttpClient.layerUndici`), its tracer off as `wiz serve`'s is.
 * - `node`: on `node:http` alone (its server, and its client with a keep-alive agent).
 *
 * Writes `listening on http://127.0.0.1:PORT/v1` to standard error once it listens.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer, Stream } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

const [kind, upstream] = process.argv.slice(2)
const target = `${upstream}/chat/completions`

/** One SSE event's `data` read and written again. */
const again = (line: string) => line === "data: [DONE]" ? `${line}\n\n` : `data: ${JSON.stringify(JSON.parse(line.slice(6)))}\n\n`

const onPlatform = () => {
  const chat = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const body = (yield* request.json) as { readonly stream?: boolean }
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post(target), body))
    if (body.stream !== true) return yield* HttpServerResponse.json(yield* response.json)
    const events = response.stream.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.filter((line) => line.startsWith("data: ")),
      Stream.map(again),
      Stream.encodeText
    )
    return HttpServerResponse.stream(events, { contentType: "text/event-stream" })
  }).pipe(Effect.orDie)
  const app = HttpRouter.empty.pipe(HttpRouter.post("/v1/chat/completions", chat), HttpServer.serve())
  const server = NodeHttpServer.layer(http.createServer, { port: 0, host: "127.0.0.1" })
  Layer.launch(Layer.mergeAll(
    app,
    Layer.effectDiscard(Effect.map(HttpServer.addressFormattedWith((url) => Effect.succeed(url)), (url) => process.stderr.write(`listening on ${url}/v1\n`)))
  ).pipe(Layer.provide(server), Layer.provide(NodeHttpClient.layerUndici), Layer.provide(Layer.setTracerEnabled(false))))
    .pipe(NodeRuntime.runMain)
}

const onNode = () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4096 })
  const url = new URL(target)
  const server = http.createServer((req, res) => {
    const parts: Array<Buffer> = []
    req.on("data", (part: Buffer) => parts.push(part))
    req.on("end", () => {
      const text = JSON.stringify(JSON.parse(Buffer.concat(parts).toString("utf8")))
      const streamed = (JSON.parse(text) as { readonly stream?: boolean }).stream === true
      const call = http.request(url, {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(text) }
      }, (answer) => {
        answer.setEncoding("utf8")
        if (!streamed) {
          let whole = ""
          answer.on("data", (part: string) => whole += part)
          answer.on("end", () => {
            const out = JSON.stringify(JSON.parse(whole))
            res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) })
            res.end(out)
          })
          return
        }
        res.writeHead(200, { "content-type": "text/event-stream" })
        let rest = ""
        answer.on("data", (part: string) => {
          const lines = (rest + part).split("\n")
          rest = lines.pop()!
          let out = ""
          for (const line of lines) if (line.startsWith("data: ")) out += again(line)
          if (out !== "") res.write(out)
        })
        answer.on("end", () => res.end())
      })
      call.end(text)
    })
  })
  server.listen(0, "127.0.0.1", () =>
    process.stderr.write(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}/v1\n`))
}

if (kind === "platform") onPlatform()
else if (kind === "node") onNode()
else throw new Error(`floorProxy: the first argument is platform or node, not ${kind}`)
