"""Tables the callbacks log (rule maps, token relevance, cluster summaries), in two forms at once.

A logger with a table type of its own (W&B's ``wandb.Table``, MLflow's ``log_table``, Comet's
``log_table``) gets the columns and rows; a logger of text only (TensorBoard's text plugin, Markdown
files) gets the Markdown rendering the callback made for people to read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Table:
    """Columns and rows, and the same content as Markdown.

    Attributes
    ----------
    columns : tuple of str
        Column names.
    rows : tuple of tuple
        One tuple of cell values (str, int or float) per row, as long as ``columns``.
    markdown : str
        The Markdown rendering (may add a heading or notes around the table).
    """

    columns: tuple
    rows: tuple
    markdown: str

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[Any]], markdown: str) -> "Table":
        """A table from any sequences, checking that every row has one cell per column.

        Parameters
        ----------
        columns : sequence of str
        rows : sequence of sequence
        markdown : str

        Returns
        -------
        Table

        Raises
        ------
        ValueError
            If a row's length differs from the number of columns.
        """
        columns = tuple(str(column) for column in columns)
        rows = tuple(tuple(row) for row in rows)
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"row {index} has {len(row)} cells for {len(columns)} columns {columns}")
        return cls(columns, rows, markdown)

    def as_columns(self) -> dict:
        """The table as ``{column: [values]}`` (MLflow's ``log_table`` takes this form).

        Returns
        -------
        dict of str to list
        """
        return {column: [row[index] for row in self.rows] for index, column in enumerate(self.columns)}
