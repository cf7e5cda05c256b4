"""The local engine's prompt cache: which prompt tokens its llama context holds evaluated."""

from __future__ import annotations

__all__ = ["PromptCache", "common_prefix_length"]


def common_prefix_length(first: list[int], second: list[int]) -> int:
    """How many leading tokens ``first`` and ``second`` have in common."""
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return min(len(first), len(second))


class PromptCache:
    """Which prompt tokens the llama context holds evaluated, kept in whole, aligned batches.

    llama-cpp-python evaluates a prompt in batches of ``n_batch`` tokens, starting where the
    part it reuses from the previous request ends. A batch's results depend, in their last
    bits, on the batch's size and on where it starts, so reusing an arbitrary prefix (or the
    whole previous prompt, with its last token evaluated again alone) changes the logits and,
    at temperature 0, the reply. Reusing only a prefix that ends on a batch boundary, made of
    batches that were themselves evaluated whole at the same boundaries, gives bit for bit
    what evaluating the prompt afresh gives; tests compare the logits.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        #: Prompt tokens whose keys and values the context holds, a whole number of batches.
        self.tokens: list[int] = []

    def reusable(self, prompt: list[int]) -> int:
        """How many of ``prompt``'s first tokens may be taken from the context as they are.

        A whole number of batches, and always fewer than ``prompt`` has: at least one token is
        evaluated, which gives the logits the first reply token is sampled from.
        """
        common = min(common_prefix_length(self.tokens, prompt), len(prompt) - 1)
        return common - common % self.batch

    def evaluated(self, prompt: list[int], held: list[int]) -> None:
        """Record ``prompt`` as evaluated, if the context (``held``) holds it as expected."""
        if held[: len(prompt)] != prompt:
            # The chat handler tokenized the prompt another way than we did: keep nothing
            # rather than reuse tokens we cannot vouch for.
            self.tokens = []
            return
        self.tokens = prompt[: len(prompt) - len(prompt) % self.batch]

    def clear(self) -> None:
        """Forget everything: the next prompt is evaluated from its first token."""
        self.tokens = []
