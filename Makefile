# The two set-up commands of the README. Both install into .venv first.
.PHONY: setup demo test test-fast

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

# The whole suite runs with PyTorch precision forced to fp32, then the fast tests again with bf16 forced
# ($HWNAS_PRECISION), so both paths stay green on any x86 host (bf16 is emulated where the CPU lacks it);
# the slow real-model tests run once, and so do the CLI paths marked precision_free (OpenVINO, or an explicit
# --precision), to keep the suite within CI's time.
test: setup
	HWNAS_PRECISION=fp32 .venv/bin/python -m pytest -q tests
	HWNAS_PRECISION=bf16 .venv/bin/python -m pytest -q -m "not slow and not precision_free" tests

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow" tests
