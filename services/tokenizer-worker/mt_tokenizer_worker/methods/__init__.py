"""Tokenizer methods, looked up by the request's ``method``.

Adding a method is one module that implements ``TokenizerMethod`` and one entry in ``_FACTORIES``. A method's
module is imported on first lookup, so that a job loads only its own library (``sentencepiece`` adds
about 2 MB to a bpe job's process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from mt_tokenizer_worker.methods.base import TokenizerMethod, TrainedTokenizer


def _bpe() -> TokenizerMethod:
    from mt_tokenizer_worker.methods.bpe import BpeMethod

    return BpeMethod()


def _sentencepiece() -> TokenizerMethod:
    from mt_tokenizer_worker.methods.sentencepiece import SentencePieceMethod

    return SentencePieceMethod()


def _rustbpe() -> TokenizerMethod:
    from mt_tokenizer_worker.methods.rustbpe import RustBpeMethod

    return RustBpeMethod()


_FACTORIES: dict[str, Callable[[], TokenizerMethod]] = {
    "bpe": _bpe,
    "sentencepiece": _sentencepiece,
    "rustbpe": _rustbpe,
}


class _Methods(Mapping[str, TokenizerMethod]):
    """The installed methods by name, each built (and its module imported) on first lookup."""

    def __init__(self) -> None:
        self._built: dict[str, TokenizerMethod] = {}

    def __getitem__(self, name: str) -> TokenizerMethod:
        if name not in self._built:
            self._built[name] = _FACTORIES[name]()
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in _FACTORIES

    def __iter__(self) -> Iterator[str]:
        return iter(_FACTORIES)

    def __len__(self) -> int:
        return len(_FACTORIES)


METHODS: Mapping[str, TokenizerMethod] = _Methods()

__all__ = ["METHODS", "TokenizerMethod", "TrainedTokenizer"]
