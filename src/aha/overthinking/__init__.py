"""REA-RL's overthinking detection: chunking a response's reasoning (`chunking`), detectors that give
P(Result) per chunk (`detectors`: the task oracle and a reflection model), and the token handling of
revisions (`revision`). The cut rules themselves are pure functions in `aha.algo.overthinking`; the
training hook is `aha.train.revision`; the config section is `options.RevisionConfig`."""
