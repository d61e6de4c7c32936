"""Benchmarks, load tests and the capacity planner (they print JSON; see README 'Benchmarks').

Load test (`avatar loadtest`, `python -m loadtests.run`): `cli` parses the command line,
`runner` runs one test: `cluster` starts the app, `clips` makes the spoken questions,
`locust_process` runs locust (whose `locustfile` loads `locust_users`, `turn_trace`,
`turn_errors`, `locust_settings` and a `shapes` shape) while `prom_sampler` watches Serve;
then `stats`, `stage_costs` and `slo` turn the records into figures, `report` assembles them,
`report_md` and `plots` render them. Capacity planner (`avatar plan`, `python -m
loadtests.plan`): `plan_report` reads a report into `capacity`'s queueing model (`queueing`).
Benchmarks: `bench_pipeline`, `bench_serving`, `eval_persona` (run each with `python -m`).

Nothing in `services` or `deployments` imports this package (an import-linter contract).
"""
