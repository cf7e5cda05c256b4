"""Cells as context: ``%%aivvm --cells N [--outputs]`` sends the cells that ran before, within
a budget, the newest kept first, scrubbed of keys."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from aivvm_magic.context import CellRecord, cells_section
from aivvm_magic.magics import magics_for


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


# -- in a shell ----------------------------------------------------------------------------------


def run(ip, code: str):
    return ip.run_cell(code, store_history=True)


def last_prompt(server) -> str:
    return server.requests[-1]["messages"][-1]["content"]


def test_cells_sends_the_previous_code_cells_so_the_cell_above_can_be_asked_about(ip, reference):
    first = run(ip, "aivvm_test_rows = [3, 1, 2]").execution_count
    run(ip, "%%aivvm --no-history\nignored: one of ours")
    run(ip, "aivvm_test_rows.sort()\naivvm_test_rows[5]")
    ip.run_cell_magic("aivvm", "--cells 2", "Why does the cell above fail?")
    prompt = last_prompt(reference)
    assert prompt.startswith(
        "Why does the cell above fail?\n\nThe cells that ran before this one, oldest first:\n\n"
        f"In[{first}]:\n```python\naivvm_test_rows = [3, 1, 2]\n```\n\n"
        f"In[{first + 2}]:\n```python\naivvm_test_rows.sort()\naivvm_test_rows[5]\n```\n"
        "It failed: IndexError: list index out of range"
    )
    assert "one of ours" not in prompt


def test_outputs_adds_each_cell_s_result_described_within_its_budget(ip, reference):
    run(ip, "aivvm_test_total = 41\naivvm_test_total + 1")
    run(ip, "list(range(100_000))")
    ip.run_cell_magic("aivvm", "--cells 2 --outputs --no-history", "What came out?")
    prompt = last_prompt(reference)
    number = ip.execution_count - 2
    assert f"Out[{number}]: 42\n" in prompt
    assert f"Out[{number + 1}]: [0, 1, 2, 3, " in prompt and "more items]" in prompt
    assert len(prompt) < 3_000
    ip.run_cell_magic("aivvm", "--cells 2 --no-history", "And without?")
    assert "Out[" not in last_prompt(reference)


def test_the_cells_budget_is_configurable_and_keys_never_go(ip, reference):
    ip.run_line_magic("config", "AivvmMagics.cells_context_chars = 400")
    run(ip, 'aivvm_test_key = "sk-canary-0000aaaa1111bbbb"')
    for n in range(10):
        run(ip, f"aivvm_test_step_{n} = {n}  # " + "words " * 30)
    ip.run_cell_magic("aivvm", "--cells 11 --no-history", "Summarise.")
    prompt = last_prompt(reference)
    context = prompt.split("Summarise.\n\n", 1)[1]
    assert len(context) <= 400 and "earlier cells left out" in context
    ip.run_line_magic("config", "AivvmMagics.cells_context_chars = 6000")
    ip.run_cell_magic("aivvm", "--cells 11 --no-history", "Again.")
    prompt = last_prompt(reference)
    assert 'aivvm_test_key = "[redacted]"' in prompt and "sk-canary" not in prompt
    parts = magics_for(ip).notebook.last_request.parts
    assert parts == (("11 previous cells", len(prompt) - len("Again.\n\n")),)


@pytest.mark.parametrize(
    ("line", "message"),
    [("--cells -1", "0 or more"), ("--outputs", "goes with --cells"), ("--cells x", "invalid int")],
)
def test_bad_cells_options_are_usage_errors(ip, reference, line, message):
    before = len(reference.requests)
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("aivvm", line, "hello")
    assert len(reference.requests) == before


def test_cells_run_without_history_are_seen_too(ip, reference):
    # As nbval runs them: the shell keeps no input history, the event still tells of each.
    ip.run_cell("aivvm_test_a = 1", store_history=False)
    ip.run_cell("aivvm_test_a + 1", store_history=False)
    ip.run_cell_magic("aivvm", "--cells 2 --outputs --no-history", "What ran?")
    prompt = last_prompt(reference)
    assert "```python\naivvm_test_a = 1\n```" in prompt
    assert "```python\naivvm_test_a + 1\n```\nOut[" in prompt and "]: 2" in prompt


def test_cells_that_ran_before_the_extension_was_loaded_come_from_the_history(ip, reference):
    ip.run_line_magic("unload_ext", "aivvm_magic")
    first = run(ip, "aivvm_test_early = 'before'").execution_count
    ip.run_line_magic("load_ext", "aivvm_magic")
    magics = magics_for(ip)
    magics.base_url, magics.display_mode, magics.retries = reference.url, "text", 0
    run(ip, "aivvm_test_late = 'after'")
    ip.run_cell_magic("aivvm", "--cells 2 --no-history", "What ran?")
    prompt = last_prompt(reference)
    assert f"In[{first}]:\n```python\naivvm_test_early = 'before'\n```\n\n" in prompt
    assert f"In[{first + 1}]:\n```python\naivvm_test_late = 'after'\n```" in prompt
