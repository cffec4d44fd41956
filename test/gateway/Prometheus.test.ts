import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import * as Prometheus from "../../src/gateway/Prometheus.js"

describe("Prometheus", () => {
  it.effect("counters, gauges and histograms in the text format, labels escaped", () =>
    Effect.gen(function*() {
      const counter = Metric.counter("prom_test_total", { description: "things", incremental: true })
      yield* Metric.incrementBy(Metric.tagged(counter, "route", "a\"b"), 2)
      yield* Metric.set(Metric.gauge("prom_test_open"), 3)
      const histogram = Metric.histogram("prom_test_ms", MetricBoundaries.fromIterable([1, 10]))
      yield* Metric.update(histogram, 5)
      yield* Metric.update(histogram, 50)
      const text = yield* Prometheus.render
      expect(text).toContain("# HELP prom_test_total things\n# TYPE prom_test_total counter\nprom_test_total{route=\"a\\\"b\"} 2\n")
      expect(text).toContain("# TYPE prom_test_open gauge\nprom_test_open 3\n")
      expect(text).toContain(`prom_test_ms_bucket{le="1"} 0`)
      expect(text).toContain(`prom_test_ms_bucket{le="10"} 1`)
      expect(text).toContain(`prom_test_ms_bucket{le="+Inf"} 2`)
      expect(text).toContain("prom_test_ms_sum 55\nprom_test_ms_count 2")
    }))
})
