/**
 * Deterministic prompts of mixed sizes for the flow benchmarks: sentences drawn from a small
 * corpus with a seeded generator, so every variant sees the same tasks.
 */
import { AiModel } from "../../src/index.js"

const corpus = [
  "The circuit breaker opens after repeated failures and closes again after a successful probe.",
  "Retries use exponential backoff with full jitter so that clients do not retry in lockstep.",
  "A token budget refills continuously and lets a call through when its whole cost fits.",
  "Providers limit requests per minute and tokens per minute and report what is left in headers.",
  "Adaptive concurrency grows while latency stays flat and shrinks when the provider slows down.",
  "A bulkhead bounds the calls in flight so that one slow dependency cannot take every worker.",
  "Streaming answers arrive word by word and the last chunk carries the usage of the call.",
  "Hedged requests start a second copy when the first has not answered within its percentile.",
  "Fallback chains try a cheaper model when the primary one is down or refuses the request.",
  "Timeouts bound every attempt and interrupt the call so that its permit is returned at once.",
  "Events describe every retry, every breaker transition and every fallback the service takes.",
  "Summaries pick the sentences whose words are the most frequent in the whole document."
]

/** A small seeded generator (mulberry32). */
export const random = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * `count` requests: prompts of `minSentences..maxSentences` sentences (each made distinct by its
 * number) and a `maxTokens` drawn from `maxTokens`.
 */
export const requests = (
  count: number,
  options: { readonly seed: number; readonly minSentences: number; readonly maxSentences: number; readonly maxTokens: ReadonlyArray<number> }
): Array<AiModel.CompletionRequest> => {
  const next = random(options.seed)
  return Array.from({ length: count }, (_, i) => {
    const sentences = options.minSentences + Math.floor(next() * (options.maxSentences - options.minSentences + 1))
    const text = Array.from({ length: sentences }, () => corpus[Math.floor(next() * corpus.length)]!).join(" ")
    const maxTokens = options.maxTokens[Math.floor(next() * options.maxTokens.length)]!
    return new AiModel.CompletionRequest({ prompt: `Task ${i}. ${text}`, maxTokens })
  })
}
