/**
 * The agent's counters and latencies, as Effect `Metric`s: every part of `AgentService` updates
 * them where the thing they count happens (an attempt starts in `Tier`, a fallback answers in
 * `FallbackChain`, a task ends in `TaskRecord`), so they live in a module of their own that
 * each part imports, rather than in the service that composes the parts.
 * `AgentService.metrics` is this module's `metrics`.
 *
 * @since 0.1.0
 */
import { Metric, MetricBoundaries, MetricKey } from "effect"

/**
 * Counters and latencies of the agent, as Effect `Metric`s.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  tasks: Metric.counter("wiz_tasks_total", { description: "tasks finished", incremental: true }),
  attempts: Metric.counter("wiz_attempts_total", { description: "model calls started", incremental: true }),
  retries: Metric.counter("wiz_retries_total", { description: "retries scheduled", incremental: true }),
  breakerTransitions: Metric.counter("wiz_breaker_transitions_total", {
    description: "circuit breaker state changes",
    incremental: true
  }),
  fallbacks: Metric.counter("wiz_fallbacks_total", { description: "answers from a fallback tier", incremental: true }),
  hedges: Metric.counter("wiz_hedges_total", { description: "hedged attempts started", incremental: true }),
  storeFallbacks: Metric.counter("wiz_store_fallbacks_total", {
    description: "times a shared store failed and the process went on with its own budget and breaker",
    incremental: true
  }),
  taskDuration: Metric.histogram(
    "wiz_task_duration_ms",
    MetricBoundaries.exponential({ start: 10, factor: 2, count: 14 }),
    "task duration in milliseconds"
  )
} as const

/**
 * `metrics.tasks` tagged by status, as metrics of their own key: `Metric.tagged` would merge
 * the tags into a new array on every update, missing its hook cache (a registry lookup and a
 * key hash per task). `Metric.value(Metric.tagged(metrics.tasks, "status", s))` reads the same.
 */
const tasksWithStatus = (status: "succeeded" | "failed") =>
  Metric.fromMetricKey(
    MetricKey.counter("wiz_tasks_total", { description: "tasks finished", incremental: true }).pipe(
      MetricKey.tagged("status", status)
    )
  )

/** @internal */
export const succeededTasks = tasksWithStatus("succeeded")

/** @internal */
export const failedTasks = tasksWithStatus("failed")
