/**
 * How identical tasks share an answer: through the memo (an answer kept for `timeToLive`, the
 * seed's `LazyAIProcessor` on `Memo`), then the coalescer (one call in flight per key, the
 * seed's `RequestCoalescer` on `Coalesce`). Each task still gets its own record, which says
 * whether its answer was `memoized`, or which role it had in a `coalesced` call and how many
 * tasks that call served; a memoized answer made no call of its own (`attempts: 0`).
 *
 * Why a module of its own: sharing sits between a task and its answer, outside every policy
 * (one shared call is retried, limited and budgeted once, however many tasks wait on it), and
 * a gateway or a durable runner that wants identical requests to share applies the same step
 * around the same answer.
 *
 * @since 0.1.0
 */
import { Effect, Either, Equal, Exit, Hash } from "effect"
import * as Coalesce from "../concurrency/Coalesce.js"
import * as Memo from "../concurrency/Memo.js"
import * as AgentEvent from "../events/AgentEvent.js"
import type * as EventBus from "../events/EventBus.js"
import type * as AiModel from "../model/AiModel.js"
import type { Coalesced } from "./AgentTask.js"
import type { Options } from "./AgentService.js"
import type { Answer, AnswerError } from "./FallbackChain.js"
import { emit, type TaskRun } from "./TaskRun.js"

/**
 * The key of a request for coalescing and memoization: its prompt and the parameters that
 * change the answer.
 *
 * @since 0.1.0
 * @category coalescing
 */
export const requestKey = (request: AiModel.CompletionRequest): string =>
  JSON.stringify([request.prompt, request.maxTokens, request.system ?? null, request.temperature ?? null])

/**
 * How one task's answer ended: the answer, or why not.
 *
 * @since 0.1.0
 * @category models
 */
export type AnswerExit = Exit.Exit<Answer, AnswerError>

/**
 * A computation of an answer that identical tasks may share: its outcome and the calls it made.
 *
 * @since 0.1.0
 * @category models
 */
export interface Computed {
  readonly exit: AnswerExit
  readonly attempts: number
}

/**
 * A task's answer as it got it: alone, through the memo, or shared with identical tasks.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sharing extends Computed {
  readonly coalesced?: Coalesced
  readonly memoized?: boolean
}

/**
 * The sharing step: the answer of the task `run` works for, computed by `answer` unless an
 * identical task's answer is kept or in flight.
 *
 * @since 0.1.0
 * @category models
 */
export type Share = (request: AiModel.CompletionRequest, run: TaskRun, answer: Effect.Effect<Answer, AnswerError>) => Effect.Effect<Sharing>

/**
 * A memo key: the request's key, compared by it alone, carrying how the asking task would
 * compute the answer (the memo runs the first asker's). A failed computation fails the lookup,
 * so the memo keeps no failure.
 */
class MemoKey implements Equal.Equal {
  constructor(readonly key: string, readonly compute: Effect.Effect<Computed, Computed>) {}
  [Equal.symbol](that: Equal.Equal): boolean {
    return that instanceof MemoKey && that.key === this.key
  }
  [Hash.symbol](): number {
    return Hash.cached(this, Hash.string(this.key))
  }
}

/** What the memo layer answers: the computation, and whether it was stored already. */
interface Recalled {
  readonly computed: Computed
  readonly memoized: boolean
}

/**
 * `coalesce` and `memo` as one step per task, publishing `Memoized` and `Coalesced` on `bus`;
 * undefined when both are off (the task answers alone, at no cost).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Pick<Options, "coalesce" | "memo">, bus: EventBus.EventBus.Service): Effect.Effect<Share | undefined> =>
  Effect.gen(function*() {
    const coalesceKey = options.coalesce === undefined || options.coalesce === false
      ? undefined
      : options.coalesce === true
      ? requestKey
      : options.coalesce.key ?? requestKey
    const memoOptions = options.memo
    if (coalesceKey === undefined && memoOptions === undefined) return undefined
    const coalesce = coalesceKey === undefined ? undefined : yield* Coalesce.make<Recalled>()
    const memoKey = memoOptions?.key ?? requestKey
    const memo = memoOptions === undefined ? undefined : yield* Memo.make<MemoKey, Computed, Computed>({
      lookup: (key) => key.compute,
      name: "AgentService",
      ...(memoOptions.capacity === undefined ? {} : { capacity: memoOptions.capacity }),
      ...(memoOptions.timeToLive === undefined ? {} : { timeToLive: memoOptions.timeToLive })
    })

    /**
     * The answer through the memo: stored (`memoized`), computed by this task, or computed by
     * an identical task this one waited for asleep (`memoized` too: the memo kept the call in
     * flight, like the seed's promise; this task made no call of its own).
     */
    const recall = (request: AiModel.CompletionRequest, run: TaskRun, compute: Effect.Effect<Computed>): Effect.Effect<Recalled> => {
      if (memo === undefined) return Effect.map(compute, (computed) => ({ computed, memoized: false }))
      const key = memoKey(request)
      let computedHere = false
      const stored = Effect.flatMap(compute, (computed) => {
        computedHere = true
        return Exit.isSuccess(computed.exit) ? Effect.succeed(computed) : Effect.fail(computed)
      })
      return Effect.matchEffect(memo.getEither(new MemoKey(key, stored), run.window?.asleep), {
        onFailure: (computed) => Effect.succeed<Recalled>({ computed, memoized: false }),
        onSuccess: (either): Effect.Effect<Recalled> =>
          Either.isRight(either) && computedHere
            ? Effect.succeed({ computed: either.right, memoized: false })
            : Effect.as(
              emit(bus, "Memoized", () => new AgentEvent.Memoized({ taskId: run.task.id, key }, true)),
              { computed: Either.isRight(either) ? either.right : either.left, memoized: true }
            )
      })
    }

    /** A call served only its own task was not shared: no `coalesced` on the record. */
    const asSharing = ({ computed, memoized }: Recalled, coalesced?: Coalesced): Sharing => ({
      exit: computed.exit,
      attempts: memoized ? 0 : computed.attempts,
      ...(memoized ? { memoized } : {}),
      ...(coalesced === undefined || coalesced.callers < 2 ? {} : { coalesced })
    })

    const share: Share = (request, run, answer) => {
      const compute = Effect.map(Effect.exit(answer), (exit): Computed => ({ exit, attempts: run.attempts }))
      const recalled = recall(request, run, compute)
      if (coalesce === undefined || coalesceKey === undefined) return Effect.map(recalled, (r) => asSharing(r))
      const key = coalesceKey(request)
      // a task waiting for an identical task's call is asleep, like one in a backoff
      return Effect.flatMap(coalesce.share(key, recalled, run.window?.asleep), ({ callers, exit, role }) => {
        // the shared call ends only by answering; a defect in it is every sharer's defect
        if (Exit.isFailure(exit)) return Effect.succeed<Sharing>({ exit: Exit.failCause(exit.cause), attempts: run.attempts })
        const sharing = asSharing(exit.value, { role, callers })
        return role === "joined"
          ? Effect.as(emit(bus, "Coalesced", () => new AgentEvent.Coalesced({ taskId: run.task.id, key, waiters: callers }, true)), sharing)
          : Effect.succeed(sharing)
      })
    }
    return share
  })
