"""The Open Inference Protocol (KServe V2): tensors, the dataplane that turns them into rows for the
prediction core, the REST blueprints under ``/v2`` and the gRPC ``GRPCInferenceService``."""
