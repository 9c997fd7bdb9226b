#!/usr/bin/env bash
# Type-checks the package as it installs: the folders (graph/, nodes/, ...) are the subpackages
# of `fusiongraph` (pyproject's package-dir), which mypy cannot map from the source tree, so they
# are linked under build/typecheck/fusiongraph and mypy checks that package.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/typecheck
mkdir -p "$root/fusiongraph"
ln -sfn ../../../fusiongraph/__init__.py "$root/fusiongraph/__init__.py"
for d in graph nodes tools serve evals local_model; do
  ln -sfn "../../../$d" "$root/fusiongraph/$d"
done
cd "$root"
exec "${MYPY:-../../.venv/bin/mypy}" --config-file ../../pyproject.toml -p fusiongraph
