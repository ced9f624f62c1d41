"""`torchsuite bisect`: from a regression to the commit (or Python environment) that brought it.

The items bisected are the first-parent commits from --good to --bad of the code under test (this
repository, or --repo: each checked out into a worktree that comes first on the workers' path, as
`torchsuite ab` and scripts/asv_commits.py do), or an ordered list of Python environments
(--pythons, the first good, the last bad). What is judged at each item:

- a figure (--figure): a registered model's quick-plan figure MODEL[/MODE[/SETUP]], or a user's
  benchmark function `module:function` timed by the suite's timing core (suite.timing.function).
  Each item is judged by an interleaved A/B against the good end (suite.ab: fresh processes, A B
  then B A) and `torchsuite compare`'s rule; an item it cannot decide is measured again, the two
  sessions' processes pooled, then skipped (suite.bisect.speed);
- a check (--check): a user's `module:function` or a registered SUITE/CASE[/CHECK], run in a
  fresh process at each item (suite.bisect.check).

Modules: search (the bisection, with skips), builds (the items and their interpreters), speed and
check (the judges), command (the CLI: ends, steps, output).
"""
