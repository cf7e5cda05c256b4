"""The cells that ran before, as bounded text: the newest kept first, the rest counted."""

from __future__ import annotations

from aivvm_magic.context import CellRecord, cells_section


def test_cells_read_oldest_first_with_their_results_and_errors():
    text = cells_section(
        [
            CellRecord(3, "x = 1"),
            CellRecord(4, "x + 1", output="2"),
            CellRecord(5, "x / 0", error="ZeroDivisionError: division by zero"),
        ],
        1_000,
    )
    assert text == (
        "The cells that ran before this one, oldest first:\n\n"
        "In[3]:\n```python\nx = 1\n```\n\n"
        "In[4]:\n```python\nx + 1\n```\nOut[4]: 2\n\n"
        "In[5]:\n```python\nx / 0\n```\nIt failed: ZeroDivisionError: division by zero"
    )


def test_the_newest_cells_are_kept_first_and_the_rest_counted():
    cells = [CellRecord(n, f"value_{n} = {n}  # " + "pad " * 20) for n in range(1, 41)]
    text = cells_section(cells, 1_000)
    assert len(text) <= 1_000
    assert "In[40]:" in text and "In[1]:" not in text
    kept = text.count("```python")
    assert f"[… {40 - kept} earlier cells left out …]" in text
    assert text.index("In[39]:") < text.index("In[40]:")


def test_a_huge_newest_cell_is_cut_to_fit():
    text = cells_section([CellRecord(9, "\n".join(f"row_{i} = {i}" for i in range(10_000)))], 800)
    assert len(text) <= 800 and "In[9]:" in text and "lines left out" in text
