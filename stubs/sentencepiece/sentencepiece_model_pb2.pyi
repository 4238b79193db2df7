"""The part of ``sentencepiece.sentencepiece_model_pb2`` (generated protobuf code, protobuf 7) that
mt_tokenizer_worker uses: reading and rewriting a trained ``ModelProto``."""

class TrainerSpec:
    def ClearField(self, field_name: str, /) -> None: ...

class ModelProto:
    trainer_spec: TrainerSpec
    def ParseFromString(self, serialized: bytes, /) -> int: ...
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...
