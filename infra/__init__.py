"""The Pulumi program: from an empty cloud account (or an existing cluster) to a running operator.

`Pulumi.yaml` at the repository root runs `infra/`; `settings` reads and checks the stack
config, `program` wires the components of `infra.components` together and exports the
outputs. Nothing here imports the server or the operator: the program talks to them only
through the chart and the FleetTelemetryConfig resource.
"""
