"""The sampling engine: tensors, masks, noise and schedules (floor 0), the KSampler core, one
sampling pass, the regional algorithms and the plain-Python front door (docs/architecture.md).

Imports nothing itself, so that `samplers/` and `models/` can use the floor-0 modules without
loading the rest of the engine."""
