"""Time to accuracy: train the article's models from scratch to a quality target, as MLPerf scores a machine.

`torchsuite converge` and the convergence step of `torchsuite run` call `runs.converge_records`;
the targets are data in suite.cases.models (`ModelSpec.convergence`); `score.score` is the one
place a set of runs becomes a figure. docs/convergence.md says how it all fits.
"""
