"""What the `inspect_ai` entry point loads (pyproject `[project.entry-points.inspect_ai]`).

Importing it registers the `fusion` model provider and the `fusiongraph/<suite>` tasks, so
`inspect eval fusiongraph/math --model fusion/local` works without an import in user code.
inspect loads every extension's entry point whenever a name is not found, so both modules
import the graph only when a fusion model or a task is actually used.
"""

from fusiongraph.evals.inspect_provider import fusion
from fusiongraph.evals.inspect_tasks import SUITE_TASKS, task_file

__all__ = ["SUITE_TASKS", "fusion", "task_file"]
