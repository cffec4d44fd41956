/**
 * wiz-effect: the async patterns an AI agent system needs, as Effect combinators and services.
 *
 * Each module is exported as a namespace, the way Effect exports its own:
 * `import { AiModel, Retry, CircuitBreaker, AgentService } from "wiz-effect"`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as AiModel from "./model/AiModel.js"

/** @since 0.1.0 */
export * as Budget from "./policy/Budget.js"

/** @since 0.1.0 */
export * as EmbeddedModel from "./model/EmbeddedModel.js"

/** @since 0.1.0 */
export * as Tokenizer from "./model/Tokenizer.js"

/** @since 0.1.0 */
export * as RateLimitHeaders from "./model/RateLimitHeaders.js"

/** @since 0.1.0 */
export * as HttpErrors from "./model/HttpErrors.js"

/** @since 0.1.0 */
export * as OpenAiCompatible from "./model/OpenAiCompatible.js"

/** @since 0.1.0 */
export * as Fallback from "./policy/Fallback.js"

/** @since 0.1.0 */
export * as Hedge from "./policy/Hedge.js"

/** @since 0.1.0 */
export * as Bulkhead from "./concurrency/Bulkhead.js"

/** @since 0.1.0 */
export * as AdaptiveLimit from "./concurrency/AdaptiveLimit.js"

/** @since 0.1.0 */
export * as TokenBudget from "./policy/TokenBudget.js"

/** @since 0.1.0 */
export * as Timeout from "./policy/Timeout.js"

/** @since 0.1.0 */
export * as Retry from "./policy/Retry.js"

/** @since 0.1.0 */
export * as CircuitBreaker from "./policy/CircuitBreaker.js"

/**
 * Where budgets and breakers live (in memory by default). The Redis one is the subpath
 * `wiz-effect/store/RedisStore`, so only its users load ioredis.
 *
 * @since 0.1.0
 */
export * as SharedStore from "./store/SharedStore.js"

/** @since 0.1.0 */
export * as AgentTask from "./agent/AgentTask.js"

/** @since 0.1.0 */
export * as ErrorInfo from "./events/ErrorInfo.js"

/** @since 0.1.0 */
export * as AgentEvent from "./events/AgentEvent.js"

/** @since 0.1.0 */
export * as AgentService from "./agent/AgentService.js"

/** @since 0.1.0 */
export * as Coalesce from "./concurrency/Coalesce.js"

/** @since 0.1.0 */
export * as Memo from "./concurrency/Memo.js"

/** @since 0.1.0 */
export * as Debounce from "./concurrency/Debounce.js"

/** @since 0.1.0 */
export * as Parallel from "./concurrency/Parallel.js"

/** @since 0.1.0 */
export * as Callback from "./interop/Callback.js"

/** @since 0.1.0 */
export * as ModelPool from "./model/ModelPool.js"

/** @since 0.1.0 */
export * as EventBus from "./events/EventBus.js"

/** @since 0.1.0 */
export * as StreamingAnswer from "./stream/StreamingAnswer.js"

/** @since 0.1.0 */
export * as AiStream from "./stream/AiStream.js"

/** @since 0.1.0 */
export * as Progress from "./events/Progress.js"

/**
 * The OpenAI-compatible gateway `wiz serve` runs: its routes as an `HttpApp` or a layer on
 * `@effect/platform`'s `HttpServer` (a peer already), the server itself yours to provide.
 *
 * @since 0.1.0
 */
export * as Gateway from "./gateway/Gateway.js"

/** @since 0.1.0 */
export * as ClientKeys from "./gateway/ClientKeys.js"
