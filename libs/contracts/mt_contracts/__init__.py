"""Typed contracts shared by the Model Trainer services: HTTP bodies, job records, the run spec,
training events, manifests and settings. Depends on msgspec and the standard library only."""
