/** Ours against the naive baseline, from the paced and naive phases' results. */
import { earlier, type Phase } from "../lib/phase";
import { fmt } from "../lib/report";

export interface ComparisonResult {
  /** Stripe calls per billed session, the naive baseline's over ours. */
  stripe_calls_naive_over_ours: number;
  /** USD per 1M sessions (Workers+Queues+D1), ours over the naive baseline's: below 1 is cheaper. */
  usd_per_million_ours_over_naive: number;
}

const STRIPE_CALLS_TARGET = { op: ">=", bound: 20 } as const;
const STRIPE_CALLS_STRETCH_TARGET = { op: ">=", bound: 45 } as const;
/** Ours costs less than the naive baseline. */
const USD_BELOW_NAIVE_TARGET = { op: "<", bound: 1 } as const;

export const comparison: Phase<"comparison", ComparisonResult> = {
  key: "comparison",
  uses: [],
  async run(ctx) {
    const ours = earlier(ctx, "paced").cost;
    const naive = earlier(ctx, "naive").cost;
    return {
      stripe_calls_naive_over_ours:
        naive.stripe_calls / naive.billed_sessions / (ours.stripe_calls / ours.billed_sessions),
      usd_per_million_ours_over_naive:
        ours.usd_per_million_sessions.total / naive.usd_per_million_sessions.total,
    };
  },
  rows(r, all) {
    return [
      {
        label: "Stripe calls: naive / ours",
        value: fmt(r.stripe_calls_naive_over_ours),
        target: { ...STRIPE_CALLS_TARGET, value: r.stripe_calls_naive_over_ours },
      },
      {
        label: "Stripe calls: naive / ours (stretch)",
        value: fmt(r.stripe_calls_naive_over_ours),
        target: { ...STRIPE_CALLS_STRETCH_TARGET, value: r.stripe_calls_naive_over_ours },
      },
      {
        label: "USD per 1M sessions: ours / naive (below naive)",
        value: fmt(r.usd_per_million_ours_over_naive),
        against: `${fmt(all.paced?.cost.usd_per_million_sessions.total)} vs naive ${fmt(all.naive?.cost.usd_per_million_sessions.total)}`,
        target: { ...USD_BELOW_NAIVE_TARGET, value: r.usd_per_million_ours_over_naive },
      },
    ];
  },
};
