/**
 * Effect's metrics in the Prometheus text format (version 0.0.4), for a `GET /metrics` a
 * scraper reads: every metric in the registry (`Metric.snapshot`), counters and gauges as they
 * are, histograms as cumulative `_bucket{le=...}` lines with `_sum` and `_count`, summaries as
 * quantiles, frequencies as one counter line per value. Names and label values are escaped, and
 * only what a metric was given is written: the agent's metrics carry model names, never a key.
 *
 * Why a module of its own: the agent's metrics are Effect `Metric`s (`AgentMetrics`), read by
 * whatever the app exports them with; a gateway with no exporter of its own still owes its
 * operators a scrape endpoint, and this is the whole of it.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import * as Prometheus from "wiz-effect/gateway/Prometheus"
 *
 * const text = Effect.zipRight(Metric.increment(Metric.counter("jobs_total")), Prometheus.render)
 * // "# TYPE jobs_total counter\njobs_total 1\n"
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Metric, MetricState, Option } from "effect"
import type { MetricKey, MetricPair } from "effect"

const name = (text: string): string => text.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^([^a-zA-Z_:])/, "_$1")

const escape = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")

const labels = (key: MetricKey.MetricKey.Untyped, extra: ReadonlyArray<readonly [string, string]> = []): string => {
  const all = [...key.tags.map((tag) => [tag.key, tag.value] as const), ...extra]
  return all.length === 0 ? "" : `{${all.map(([k, v]) => `${name(k)}="${escape(v)}"`).join(",")}}`
}

const number = (value: number | bigint): string =>
  typeof value === "bigint" ? value.toString() : Number.isNaN(value) ? "NaN" : value === Infinity ? "+Inf" : value === -Infinity ? "-Inf" : String(value)

/**
 * Prometheus text for the given metrics.
 *
 * @since 0.1.0
 * @category encoding
 */
export const format = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const byName = new Map<string, { type: string; help: string | undefined; lines: Array<string> }>()
  const family = (metric: string, type: string, help: string | undefined) => {
    let found = byName.get(metric)
    if (found === undefined) {
      found = { type, help, lines: [] }
      byName.set(metric, found)
    }
    return found.lines
  }
  for (const { metricKey: key, metricState: state } of pairs) {
    const metric = name(key.name)
    const help = Option.getOrUndefined(key.description)
    if (MetricState.isCounterState(state)) {
      family(metric, "counter", help).push(`${metric}${labels(key)} ${number(state.count)}`)
    } else if (MetricState.isGaugeState(state)) {
      family(metric, "gauge", help).push(`${metric}${labels(key)} ${number(state.value)}`)
    } else if (MetricState.isHistogramState(state)) {
      const lines = family(metric, "histogram", help)
      for (const [le, count] of state.buckets) lines.push(`${metric}_bucket${labels(key, [["le", number(le)]])} ${count}`)
      lines.push(`${metric}_bucket${labels(key, [["le", "+Inf"]])} ${state.count}`)
      lines.push(`${metric}_sum${labels(key)} ${number(state.sum)}`, `${metric}_count${labels(key)} ${state.count}`)
    } else if (MetricState.isSummaryState(state)) {
      const lines = family(metric, "summary", help)
      for (const [quantile, value] of state.quantiles) {
        if (Option.isSome(value)) lines.push(`${metric}${labels(key, [["quantile", String(quantile)]])} ${number(value.value)}`)
      }
      lines.push(`${metric}_sum${labels(key)} ${number(state.sum)}`, `${metric}_count${labels(key)} ${state.count}`)
    } else if (MetricState.isFrequencyState(state)) {
      const lines = family(metric, "counter", help)
      for (const [value, count] of state.occurrences) lines.push(`${metric}${labels(key, [["value", value]])} ${count}`)
    }
  }
  let out = ""
  for (const [metric, { help, lines, type }] of byName) {
    if (help !== undefined) out += `# HELP ${metric} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}\n`
    out += `# TYPE ${metric} ${type}\n${lines.join("\n")}\n`
  }
  return out
}

/** The process's memory, as the standard `process_*` and `nodejs_*` gauges a scraper expects. */
const processMemory = (): string => {
  const memory = process.memoryUsage()
  return [
    "# TYPE process_resident_memory_bytes gauge",
    `process_resident_memory_bytes ${memory.rss}`,
    "# TYPE nodejs_heap_size_used_bytes gauge",
    `nodejs_heap_size_used_bytes ${memory.heapUsed}`,
    "# TYPE nodejs_external_memory_bytes gauge",
    `nodejs_external_memory_bytes ${memory.external}`,
    ""
  ].join("\n")
}

/**
 * Every metric in Effect's registry, and the process's memory, as Prometheus text.
 *
 * @since 0.1.0
 * @category encoding
 */
export const render: Effect.Effect<string> = Effect.map(Metric.snapshot, (pairs) => format(pairs) + processMemory())
