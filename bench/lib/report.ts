/** The summary a run prints: one table of figures, then the targets met and missed. */
import { met, type Row, type Target } from "./phase";

export function fmt(v: number | null | undefined, digits = 2): string {
  if (typeof v !== "number" || !Number.isFinite(v)) return "n/a";
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits);
}

const targetText = (t: Target) => `target ${t.op} ${t.bound}`;

export function table(rows: Row[]): string {
  const cells = rows.map((r) => [
    r.label,
    r.value,
    [r.against, r.target && targetText(r.target)].filter(Boolean).join("; "),
  ]);
  const w = Math.max(0, ...cells.map((c) => c[0]?.length ?? 0));
  const w2 = Math.max(0, ...cells.map((c) => c[1]?.length ?? 0));
  return cells
    .map(([a = "", b = "", c = ""]) => `${a.padEnd(w)}  ${b.padStart(w2)}  ${c}`.trimEnd())
    .join("\n");
}

export interface TargetCheck {
  figure: string;
  target: string;
  value: number | null;
  met: boolean;
}

export function targetChecks(rows: Row[]): TargetCheck[] {
  return rows.flatMap((r) =>
    r.target
      ? [
          {
            figure: r.label,
            target: `${r.target.op} ${r.target.bound}`,
            value: typeof r.target.value === "number" ? r.target.value : null,
            met: met(r.target),
          },
        ]
      : [],
  );
}

export function targetLines(checks: TargetCheck[]): string {
  const w = Math.max(0, ...checks.map((c) => c.figure.length + c.target.length + 1));
  return checks
    .map(
      (c) =>
        `${`${c.figure} ${c.target}`.padEnd(w)}  ${fmt(c.value, 3).padStart(6)}  ${c.met ? "met" : "NOT MET"}`,
    )
    .join("\n");
}
