"""The one error type of the workflow runner: a bad workflow (the CLI reports it on one line, exit status 2)."""


class WorkflowError(ValueError):
    """A workflow that cannot run: malformed file, unknown node types, missing inputs, wrong types, cycles, a
    model or input file not found. Raised before any node runs whenever the problem can be seen up front."""
