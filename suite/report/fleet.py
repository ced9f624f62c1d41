"""The fleet report: many machines' results as distributions across machines, and the machines that are off.

Past FLEET_MACHINES machines a column each stops being readable, so `torchsuite report` writes this
page instead: on its first screen the machines that are off (suite.cases.fleet's rules, each
machine with its reasons), the machines grouped apart because they ran another stack, then
each figure's and limit's distribution across the fleet (median, robust spread, quantiles, a
strip plot with the outliers named) and each check the fleet disagrees on. Nothing on it grows
with the machine count but the capped lists, whose whole is fleet.csv.

It reads the results store (suite.report.store) through DuckDB: every machine's latest run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.cases.fleet import FLEET_MACHINES, MAD_TO_SD, MIN_COHORT, RULES, STACK, FleetRule
from suite.report import render
from suite.report import store as results_store

# The longest list the page shows of a kind (machines off, machines of another stack, checks); fleet.csv has all.
SHOWN = 40
FIGURE_TABLES = ("limits", "timings")


@dataclass
class Fleet:
    machines: pd.DataFrame  # machine, run_id, cohort, stack fields
    main_cohort: str
    findings: pd.DataFrame  # machine, cohort, rule, key, value, unit, fleet_median, ratio, robust_z, reason
    distributions: pd.DataFrame  # cohort, table, key, unit, machines, median, spread, quantiles, outliers
    points: pd.DataFrame  # the main cohort's figures: table, key, machine, ratio (to the median), off
    disagreements: pd.DataFrame  # cohort, key, machines, passed, failed, machines that differ

    def off(self) -> pd.DataFrame:
        """One row per machine that is off, its reasons worst first."""
        if not len(self.findings):
            return pd.DataFrame(columns=["machine", "reasons"])
        ordered = self.findings.assign(severity=self.findings["robust_z"].abs().fillna(math.inf)).sort_values(
            ["severity"], ascending=False)
        grouped = ordered.groupby("machine", sort=False).agg(findings=("reason", "size"),
                                                            reasons=("reason", lambda r: "; ".join(r.head(3))))
        grouped["reasons"] = [r + (f"; and {n - 3} more" if n > 3 else "") for r, n in
                              zip(grouped["reasons"], grouped["findings"])]
        return grouped.reset_index()[["machine", "findings", "reasons"]]

    def other_stacks(self) -> pd.DataFrame:
        others = self.machines[self.machines["cohort"] != self.main_cohort]
        return (others.groupby("cohort").agg(machines=("machine", "size"),
                                             names=("machine", lambda m: ", ".join(sorted(m)[:10])
                                                    + (f", and {len(m) - 10} more" if len(m) > 10 else "")))
                .sort_values("machines", ascending=False).reset_index())


def _stack(row) -> str:
    return ", ".join(f"{field} {'n/a' if pd.isna(row[field]) or row[field] == '' else row[field]}" for field in STACK)


def diagnose(stores: list, rules: tuple[FleetRule, ...] = RULES) -> Fleet:
    con = results_store.connect(stores)
    machines = con.execute(
        f"""SELECT machine, run_id, {", ".join(STACK)} FROM (
              SELECT machine, run_id, {", ".join(STACK)},
                     row_number() OVER (PARTITION BY machine ORDER BY started_at DESC, run_id DESC) AS n
              FROM runs) WHERE n = 1 ORDER BY machine""").df()
    machines["cohort"] = [_stack(row) for _, row in machines.iterrows()] if len(machines) else []
    sizes = machines["cohort"].value_counts()
    main = sizes.index[0] if len(sizes) else ""
    diagnosed = [c for c, n in sizes.items() if n >= MIN_COHORT]
    con.register("latest", machines[machines["cohort"].isin(diagnosed)][["machine", "run_id", "cohort"]])
    findings, distributions, points, disagreements = [], [], [], []
    for rule in rules:
        if rule.table in FIGURE_TABLES:
            found, spread, strip = _figures(con, rule, main)
            findings.append(found)
            distributions.append(spread)
            points.append(strip)
        else:
            found, differ = _verdicts(con, rule)
            findings.append(found)
            disagreements.append(differ)
    return Fleet(machines, main, _concat(findings), _concat(distributions), _concat(points), _concat(disagreements))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _figures(con, rule: FleetRule, main_cohort: str):
    """A figure's logarithm per machine against its cohort's median log, in robust standard deviations."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE per_machine AS
        SELECT l.cohort, r.key, any_value(r.unit) AS unit, r.machine, ln(median(r.value)) AS log_value
        FROM {rule.table} r JOIN latest l ON r.run_id = l.run_id
        WHERE r.value > 0 GROUP BY l.cohort, r.key, r.machine""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE centre AS
        SELECT cohort, key, median(log_value) AS centre FROM per_machine GROUP BY cohort, key""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE scored AS
        SELECT p.*, p.log_value - c.centre AS deviation,
               {MAD_TO_SD} * median(abs(p.log_value - c.centre)) OVER (PARTITION BY p.cohort, p.key) AS robust_sd
        FROM per_machine p JOIN centre c USING (cohort, key)""")
    off = (f"abs(deviation) >= {rule.robust_z} * robust_sd AND abs(exp(deviation) - 1) >= {rule.min_fraction} "
           f"AND count(*) OVER (PARTITION BY cohort, key) >= {MIN_COHORT}")
    found = con.execute(f"""
        SELECT machine, cohort, key, unit, exp(log_value) AS value, exp(log_value - deviation) AS fleet_median,
               exp(deviation) AS ratio, CASE WHEN robust_sd > 0 THEN deviation / robust_sd END AS robust_z
        FROM (SELECT *, {off} AS is_off FROM scored) WHERE is_off ORDER BY machine, key""").df()
    found.insert(2, "rule", rule.name)
    found["reason"] = [f"{rule.name} {k} at {r:.2f} of the fleet's median ({_z(z)})"
                       for k, r, z in zip(found["key"], found["ratio"], found["robust_z"])]
    spread = con.execute(f"""
        SELECT cohort, key, any_value(unit) AS unit, count(*) AS machines, exp(median(log_value)) AS median,
               exp(any_value(robust_sd)) - 1 AS robust_spread,
               exp(quantile_cont(log_value, 0.05)) AS p5, exp(quantile_cont(log_value, 0.25)) AS p25,
               exp(quantile_cont(log_value, 0.75)) AS p75, exp(quantile_cont(log_value, 0.95)) AS p95,
               exp(min(log_value)) AS min, exp(max(log_value)) AS max, sum(is_off::INT) AS off
        FROM (SELECT *, {off} AS is_off FROM scored) GROUP BY cohort, key ORDER BY cohort, key""").df()
    spread.insert(1, "table", rule.table)
    strip = con.execute(f"""
        SELECT key, machine, exp(deviation) AS ratio, {off} AS off FROM scored WHERE cohort = ?""",
                        [main_cohort]).df()
    strip.insert(0, "table", rule.table)
    return found, spread, strip


def _z(z) -> str:
    return "robust z n/a: the rest of the fleet agree exactly" if z is None or pd.isna(z) else f"robust z {z:+.1f}"


def _verdicts(con, rule: FleetRule):
    """Each check's verdict per machine against its cohort's majority. A crash or an error is a failed
    check that only the machines it happened on record: the cohort's others passed it."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE per_check AS
        SELECT l.cohort, r.key, r.machine, bool_and(r.passed) AS passed, any_value(r.detail) AS detail,
               any_value(r.incident) AS incident
        FROM (SELECT run_id, machine, key, passed, detail, false AS incident FROM verdicts
              UNION ALL SELECT run_id, machine, key, false, detail, true FROM crashes
              UNION ALL SELECT run_id, machine, key, false, detail, true FROM errors) r
        JOIN latest l ON r.run_id = l.run_id GROUP BY l.cohort, r.key, r.machine""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE tally AS
        SELECT cohort, key, machines::BIGINT AS machines, passed::BIGINT AS passed, (machines - passed)::BIGINT AS failed
        FROM (
            SELECT v.cohort, v.key,
                   CASE WHEN any_value(v.incident) THEN any_value(s.size) ELSE count(*) END AS machines,
                   CASE WHEN any_value(v.incident) THEN any_value(s.size) - count(*) ELSE sum(v.passed::INT) END
                       AS passed
            FROM per_check v JOIN (SELECT cohort, count(*) AS size FROM latest GROUP BY cohort) s USING (cohort)
            GROUP BY v.cohort, v.key)""")
    found = con.execute(f"""
        SELECT v.machine, v.cohort, v.key, v.passed, v.detail, t.passed AS fleet_passed, t.failed AS fleet_failed,
               t.machines
        FROM per_check v JOIN tally t USING (cohort, key)
        WHERE t.machines >= {MIN_COHORT}
          AND CASE WHEN v.passed THEN t.failed ELSE t.passed END > {rule.majority} * t.machines
        ORDER BY v.machine, v.key""").df()
    found.insert(2, "rule", rule.name)
    found["reason"] = [f"{rule.name} {k}: {'passes' if p else 'FAILS'} where {int(failed if p else passed)} of {n} "
                       f"{'fail' if p else 'pass'}" + (f" ({_short(d)})" if not p and d else "")
                       for k, p, d, passed, failed, n in zip(found["key"], found["passed"], found["detail"],
                                                            found["fleet_passed"], found["fleet_failed"],
                                                            found["machines"])]
    differ = con.execute(f"""
        SELECT cohort, key, machines, passed, failed FROM tally WHERE failed > 0 AND machines >= {MIN_COHORT}
        ORDER BY failed DESC, key""").df()
    return found.drop(columns=["passed", "fleet_passed", "fleet_failed", "machines", "detail"]), differ


def _short(detail, limit: int = 80) -> str:
    text = str(detail).splitlines()[0] if detail else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the page ------------------------------------------------------------------------------------------

RULES_TEXT = "Rules (suite.cases.fleet): " + "; ".join(f"{r.name}: {r.describe()}" for r in RULES) + "."


def sections(fleet: Fleet) -> list[render.Section]:
    machines = len(fleet.machines)
    off = fleet.off()
    others = fleet.other_stacks()
    main_size = int((fleet.machines["cohort"] == fleet.main_cohort).sum())
    out = [render.Section(
        "Machines that are off",
        f"{machines} machines; {main_size} ran the fleet's stack ({fleet.main_cohort}) and are compared with each "
        f"other, each with its latest run. {len(off)} of them are off: "
        + ("none." if not len(off) else "each with its worst reasons (every finding is in fleet.csv).")
        + f"\n\n{RULES_TEXT}",
        _capped(off, "machines"), index=False)]
    out.append(render.Section(
        "Machines on another stack",
        "Grouped apart, not called outliers: a machine on another torch, CUDA, driver or torchsuite version is "
        f"compared only with machines of its own stack, and a group of fewer than {MIN_COHORT} is not diagnosed."
        if len(others) else "None: every machine ran the fleet's stack.",
        _capped(others, "stacks") if len(others) else None, index=False))
    if len(fleet.disagreements):
        out.append(render.Section(
            "Checks the fleet disagrees on",
            "Each check that failed, crashed or raised on some machines of a cohort: how many passed and failed.",
            _capped(fleet.disagreements, "checks"), index=False))
    for table, title in (("limits", "Machine limits across the fleet"), ("timings", "Timed figures across the fleet")):
        rows = fleet.distributions[fleet.distributions["table"] == table] if len(fleet.distributions) else []
        if len(rows):
            out.append(render.Section(
                title, "Per figure across the machines of a cohort: the median; the robust spread (1.4826 MAD of "
                "the logarithms, as a fraction: about one standard deviation); quantiles; and how many machines "
                "are off. In the plot each dot is a machine, at its figure over the fleet's median; red dots are "
                "off and named.", _distribution_table(rows), index=False, image=f"fleet_{table}.png"))
    return out


def _capped(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if len(frame) <= SHOWN:
        return frame
    note = {frame.columns[0]: f"... and {len(frame) - SHOWN} more {what} (fleet.csv)"}
    return pd.concat([frame.head(SHOWN), pd.DataFrame([note])], ignore_index=True)


def _distribution_table(rows: pd.DataFrame) -> pd.DataFrame:
    shown = rows.drop(columns=["table"]).copy()
    for column in ("median", "p5", "p25", "p75", "p95", "min", "max"):
        shown[column] = [f"{v:.4g}" for v in shown[column]]
    shown["robust_spread"] = [f"{v:.1%}" for v in shown["robust_spread"]]
    shown["off"] = shown["off"].astype(int)
    return shown if shown["cohort"].nunique() > 1 else shown.drop(columns=["cohort"])


def write_plots(fleet: Fleet, directory: Path) -> None:
    from suite.report.plots import pyplot

    plt = pyplot()
    for table in FIGURE_TABLES:
        points = fleet.points[fleet.points["table"] == table] if len(fleet.points) else fleet.points
        if not len(points):
            continue
        keys = sorted(points["key"].unique())
        figure, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * len(keys)))
        position = {k: i for i, k in enumerate(keys)}
        y = points["key"].map(position).to_numpy(dtype=float)
        jitter = ((pd.util.hash_pandas_object(points["machine"], index=False).to_numpy() % 1000) / 1000 - 0.5) * 0.5
        off = points["off"].to_numpy(dtype=bool)
        ax.scatter(points["ratio"][~off], (y + jitter)[~off], s=6, alpha=0.35, color="tab:blue", linewidths=0)
        ax.scatter(points["ratio"][off], (y + jitter)[off], s=18, color="tab:red")
        for (_, row), height in zip(points[off].head(SHOWN).iterrows(), (y + jitter)[off]):
            ax.annotate(str(row["machine"]), (row["ratio"], height), fontsize=7, color="tab:red",
                        xytext=(4, 2), textcoords="offset points")
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yticks(range(len(keys)), keys, fontsize=7)
        ax.set_ylim(-0.6, len(keys) - 0.4)
        ax.invert_yaxis()
        ax.set_xlabel("figure / the fleet's median (log scale)")
        ax.set_title(f"{table}: {points['machine'].nunique()} machines of the fleet's stack")
        figure.tight_layout()
        figure.savefig(directory / f"fleet_{table}.png", dpi=90)
        plt.close(figure)


def write(fleet: Fleet, directory: Path) -> None:
    """fleet.csv (every finding), distributions.csv, the plots, report.md and report.html into directory."""
    columns = ["machine", "cohort", "rule", "key", "value", "unit", "fleet_median", "ratio", "robust_z", "reason"]
    fleet.findings.reindex(columns=columns).to_csv(directory / "fleet.csv", index=False)
    if len(fleet.distributions):
        fleet.distributions.to_csv(directory / "distributions.csv", index=False)
    write_plots(fleet, directory)
    parts = sections(fleet)
    (directory / "report.md").write_text(render.to_markdown(parts, "torchsuite fleet report"), encoding="utf-8")
    (directory / "report.html").write_text(render.to_html(parts, directory, "torchsuite fleet report"),
                                           encoding="utf-8")


def is_fleet(machine_count: int) -> bool:
    return machine_count > FLEET_MACHINES
