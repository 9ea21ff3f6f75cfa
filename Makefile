# The two set-up commands of the README. Both install into .venv first.
.PHONY: setup demo test test-fast

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

# The suite runs twice, PyTorch precision forced to fp32 then bf16 ($HWNAS_PRECISION), so both paths stay green
# on any x86 host (bf16 is emulated where the CPU lacks it).
test: setup
	HWNAS_PRECISION=fp32 .venv/bin/python -m pytest -q tests
	HWNAS_PRECISION=bf16 .venv/bin/python -m pytest -q tests

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow" tests
