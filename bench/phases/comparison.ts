/** Ours against the naive baseline, from the paced and naive phases' results. */
import { earlier, type Phase } from "../lib/phase";
import { fmt } from "../lib/report";

export interface ComparisonResult {
  /** Stripe calls per billed session, the naive baseline's over ours. */
  stripe_calls_naive_over_ours: number;
}

const STRIPE_CALLS_TARGET = { op: ">=", bound: 20 } as const;

export const comparison: Phase<"comparison", ComparisonResult> = {
  key: "comparison",
  uses: [],
  async run(ctx) {
    const ours = earlier(ctx, "paced").cost;
    const naive = earlier(ctx, "naive").cost;
    return {
      stripe_calls_naive_over_ours:
        naive.stripe_calls / naive.billed_sessions / (ours.stripe_calls / ours.billed_sessions),
    };
  },
  rows(r) {
    return [
      {
        label: "Stripe calls: naive / ours",
        value: fmt(r.stripe_calls_naive_over_ours),
        target: { ...STRIPE_CALLS_TARGET, value: r.stripe_calls_naive_over_ours },
      },
    ];
  },
};
